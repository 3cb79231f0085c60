"""Give kafka-python's record code the snappy and lz4 codecs it looks for.

kafka-python finds snappy through the python-snappy module and lz4 through python-lz4,
neither of which tidelog depends on. These shims provide the two calls it makes (a raw
snappy block each way; an lz4 frame each way, with independent blocks as Kafka requires)
on top of cramjam, so kafka-python's own xerial framing and batch parsing can be checked
against ours for every codec.
"""

from __future__ import annotations

import types

import cramjam
import kafka.codec
import kafka.record.default_records
import pytest


def _lz4_frame_compress(payload: bytes) -> bytes:
    frame = cramjam.lz4.Compressor(block_linked=False)
    frame.compress(bytes(payload))
    return bytes(frame.finish())


def _lz4_frame_decompress(payload: bytes) -> bytes:
    return bytes(cramjam.lz4.decompress(bytes(payload)))


_SNAPPY = types.SimpleNamespace(
    compress=lambda data: bytes(cramjam.snappy.compress_raw(bytes(data))),
    decompress=lambda data: bytes(cramjam.snappy.decompress_raw(bytes(data))),
)


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make kafka-python's record batches support snappy and lz4 until `monkeypatch` undoes it."""
    monkeypatch.setattr(kafka.codec, "snappy", _SNAPPY)
    monkeypatch.setattr(kafka.codec, "lz4", types.SimpleNamespace())
    monkeypatch.setattr(kafka.record.default_records, "lz4_encode", _lz4_frame_compress)
    monkeypatch.setattr(kafka.record.default_records, "lz4_decode", _lz4_frame_decompress)

"""Checkpoint files: small text tables replaced atomically and protected by a checksum.

File format (UTF-8 text, one item per line)::

    <format version, 0>
    <row count>
    <field> <field> ...        one line per row, fields separated by one space
    xxh3_64 <16 hex digits>    checksum of every byte above this line

A write goes to `<path>.tmp`, is fsynced, renamed over `<path>`, and the directory is
fsynced, so a reader sees the old file or the new one, never a mix. A torn or stale file
fails its checksum and reads as `CorruptCheckpointError`; callers rebuild what it held.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

import xxhash

from tidelog.storage.errors import CorruptCheckpointError
from tidelog.storage.filesystem import FileSystem

FORMAT_VERSION = 0
TEMP_SUFFIX = ".tmp"
_CHECKSUM_PREFIX = b"xxh3_64 "


def _checksum(payload: bytes) -> bytes:
    return b"%016x" % xxhash.xxh3_64_intdigest(payload)


def encode_table(rows: Iterable[Sequence[object]]) -> bytes:
    """The file bytes for `rows`; fields must not contain whitespace."""
    lines = []
    for row in rows:
        fields = [str(field) for field in row]
        if any(not field or len(field.split()) != 1 or field.strip() != field for field in fields):
            raise ValueError(f"checkpoint fields must be non-empty without spaces: {fields!r}")
        lines.append(" ".join(fields))
    payload = f"{FORMAT_VERSION}\n{len(lines)}\n".encode() + b"".join(
        line.encode() + b"\n" for line in lines
    )
    return payload + _CHECKSUM_PREFIX + _checksum(payload) + b"\n"


def decode_table(data: bytes, fields_per_row: int) -> list[list[str]]:
    """The rows of a checkpoint file; CorruptCheckpointError on any inconsistency."""
    trailer_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    payload, trailer = data[:trailer_start], data[trailer_start:]
    if trailer != _CHECKSUM_PREFIX + _checksum(payload) + b"\n":
        raise CorruptCheckpointError("checksum mismatch")
    try:
        lines = payload.decode().split("\n")[:-1]
        version, count = int(lines[0]), int(lines[1])
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise CorruptCheckpointError(f"bad header: {exc}") from exc
    if version != FORMAT_VERSION:
        raise CorruptCheckpointError(f"unknown checkpoint version {version}")
    rows = [line.split(" ") for line in lines[2:]]
    if len(rows) != count or any(len(row) != fields_per_row for row in rows):
        raise CorruptCheckpointError("row count or field count mismatch")
    return rows


def write_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Replace `path` with `data` durably: temp file, fsync, rename, fsync the directory."""
    temp_path = path + TEMP_SUFFIX
    handle = fs.open(temp_path, create=True)
    try:
        handle.truncate(0)
        handle.append(data)
        handle.fsync()
    finally:
        handle.close()
    fs.rename(temp_path, path)
    fs.fsync_dir(posixpath.dirname(path) or ".")


def read_file_if_exists(fs: FileSystem, path: str) -> bytes | None:
    try:
        return fs.read_file(path)
    except FileNotFoundError:
        return None

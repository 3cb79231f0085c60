"""Checkpoint files: atomic replacement and checksum protection on both filesystems."""

from __future__ import annotations

import pytest

from tests.storage.conftest import StorageEnv
from tidelog.storage.checkpoint import decode_table, encode_table, read_file_if_exists, write_atomic
from tidelog.storage.errors import CorruptCheckpointError
from tidelog.storage.filesystem import FaultPoint
from tidelog.storage.leader_epoch import EpochEntry, LeaderEpochCache


def test_round_trip(env: StorageEnv) -> None:
    path = env.path("cp")
    write_atomic(env.fs, path, encode_table([("topic", 0, 17), ("other", 3, 0)]))
    data = read_file_if_exists(env.fs, path)
    assert data is not None
    assert decode_table(data, 3) == [["topic", "0", "17"], ["other", "3", "0"]]
    assert env.fs.listdir(env.root) == ["cp"]
    assert read_file_if_exists(env.fs, env.path("missing")) is None


def test_every_flipped_byte_is_detected() -> None:
    data = encode_table([("t", 1, 123456)])
    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x01
        with pytest.raises(CorruptCheckpointError):
            decode_table(bytes(corrupted), 3)
    for cut in range(len(data)):
        with pytest.raises(CorruptCheckpointError):
            decode_table(data[:cut], 3)


def test_wrong_shape_is_corrupt() -> None:
    with pytest.raises(CorruptCheckpointError):
        decode_table(encode_table([("t", 1)]), 3)


def test_fields_with_spaces_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_table([("a b", 1)])


@pytest.mark.parametrize("point", [FaultPoint.WRITE, FaultPoint.FSYNC, FaultPoint.RENAME])
def test_a_failed_write_leaves_the_old_file(env: StorageEnv, point: FaultPoint) -> None:
    path = env.path("cp")
    write_atomic(env.fs, path, encode_table([("t", 0, 1)]))
    env.faults.arm(point)
    with pytest.raises(OSError):
        write_atomic(env.fs, path, encode_table([("t", 0, 2)]))
    data = read_file_if_exists(env.fs, path)
    assert data is not None and decode_table(data, 3) == [["t", "0", "1"]]


def test_leader_epoch_cache_round_trips_and_rejects_disorder() -> None:
    cache = LeaderEpochCache([EpochEntry(1, 0), EpochEntry(3, 50)])
    assert LeaderEpochCache.decode(cache.encode()).entries == cache.entries
    with pytest.raises(CorruptCheckpointError):
        LeaderEpochCache.decode(encode_table([(3, 50), (1, 60)]))
    with pytest.raises(CorruptCheckpointError):
        LeaderEpochCache.decode(encode_table([("x", 50)]))

"""LogDirectory on both filesystems: discovery, creation, deletion and checkpoints."""

from __future__ import annotations

import logging

import pytest

from tests.storage.batches import make_batch, payload, read_everything
from tests.storage.conftest import Clock, StorageEnv
from tidelog.storage.checkpoint import decode_table
from tidelog.storage.config import LogConfig
from tidelog.storage.log_directory import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    LogDirectory,
    parse_partition_dir_name,
)

CONFIG = LogConfig(segment_bytes=2_000, index_interval_bytes=300)


def checkpoint_rows(env: StorageEnv, name: str) -> list[list[str]]:
    return decode_table(env.fs.read_file(env.path(name)), 3)


def test_partition_directory_names() -> None:
    assert parse_partition_dir_name("my-topic-12") == ("my-topic", 12)
    assert parse_partition_dir_name("a.b_c-0") == ("a.b_c", 0)
    for name in ("topic", "topic-", "-3", "topic-x", "bad topic-1"):
        assert parse_partition_dir_name(name) is None


def test_create_close_and_rediscover(env: StorageEnv, clock: Clock) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    assert len(directory) == 0
    written: dict[tuple[str, int], list[bytes]] = {}
    for topic, partition in (("orders", 0), ("orders", 1), ("my-events", 3)):
        log = directory.get_or_create(topic, partition, CONFIG)
        assert directory.get_or_create(topic, partition, CONFIG) is log
        batches = [make_batch(2, tag=i) for i in range(12)]
        for batch in batches:
            log.append(batch, leader_epoch=0)
        written[(topic, partition)] = batches
    directory.close()
    rows = checkpoint_rows(env, RECOVERY_POINT_CHECKPOINT)
    assert sorted(rows) == [["my-events", "3", "24"], ["orders", "0", "24"], ["orders", "1", "24"]]

    reopened = LogDirectory.open(env.root, env.fs, clock, config_for=lambda _topic: CONFIG)
    assert sorted(tp for tp, _ in reopened) == sorted(written)
    for topic_partition, batches in written.items():
        found = reopened.get(*topic_partition)
        assert found is not None
        assert found.recovery_point == 24
        assert [payload(d) for _, d in read_everything(found)] == [payload(b) for b in batches]
    assert reopened.get("orders", 9) is None


def test_checkpoint_tracks_flushes_and_log_start(env: StorageEnv, clock: Clock) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    log = directory.get_or_create("t", 0, CONFIG)
    for tag in range(30):
        log.append(make_batch(3, value_bytes=40, tag=tag), leader_epoch=0)
    directory.checkpoint()
    assert checkpoint_rows(env, RECOVERY_POINT_CHECKPOINT) == [["t", "0", "0"]]
    log.flush()
    log.delete_records(40)  # writes the checkpoints itself
    assert checkpoint_rows(env, RECOVERY_POINT_CHECKPOINT) == [["t", "0", "90"]]
    assert checkpoint_rows(env, LOG_START_OFFSET_CHECKPOINT) == [["t", "0", "40"]]
    directory.close()
    reopened = LogDirectory.open(env.root, env.fs, clock, config_for=lambda _topic: CONFIG)
    found = reopened.get("t", 0)
    assert found is not None and found.log_start_offset == 40


def test_truncation_lowers_the_checkpointed_recovery_point(env: StorageEnv, clock: Clock) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    log = directory.get_or_create("t", 0, CONFIG)
    for tag in range(10):
        log.append(make_batch(3, tag=tag), leader_epoch=0)
    log.flush()
    directory.checkpoint()
    log.truncate_to(12)
    assert checkpoint_rows(env, RECOVERY_POINT_CHECKPOINT) == [["t", "0", "12"]]


@pytest.mark.parametrize("name", [RECOVERY_POINT_CHECKPOINT, LOG_START_OFFSET_CHECKPOINT])
def test_corrupt_checkpoints_are_rebuilt(
    env: StorageEnv, clock: Clock, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    log = directory.get_or_create("t", 0, CONFIG)
    batches = [make_batch(2, tag=i) for i in range(20)]
    for batch in batches:
        log.append(batch, leader_epoch=0)
    directory.close()
    handle = env.fs.open(env.path(name))
    data = bytearray(handle.pread(0, handle.size()))
    data[2] ^= 0x10
    handle.truncate(0)
    handle.append(bytes(data))
    with caplog.at_level(logging.WARNING, logger="storage"):
        reopened = LogDirectory.open(env.root, env.fs, clock, config_for=lambda _topic: CONFIG)
    assert "corrupt" in caplog.text
    found = reopened.get("t", 0)
    assert found is not None
    assert [payload(d) for _, d in read_everything(found)] == [payload(b) for b in batches]
    # Reopening rewrote a valid checkpoint; a recovery point is only regained by a flush.
    assert checkpoint_rows(env, name) == [["t", "0", "0"]]


def test_delete_removes_the_partition_and_forgets_its_checkpoints(
    env: StorageEnv, clock: Clock
) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    for partition in (0, 1):
        log = directory.get_or_create("t", partition, CONFIG)
        log.append(make_batch(5), leader_epoch=0)
        log.flush()
    directory.checkpoint()
    assert directory.delete("t", 0)
    assert not directory.delete("t", 0)
    assert directory.get("t", 0) is None
    assert not env.fs.exists(env.path("t-0"))
    assert checkpoint_rows(env, RECOVERY_POINT_CHECKPOINT) == [["t", "1", "5"]]
    fresh = directory.get_or_create("t", 0, CONFIG)
    assert (fresh.log_start_offset, fresh.log_end_offset, fresh.recovery_point) == (0, 0, 0)


def test_open_finishes_an_interrupted_delete_and_drops_temp_files(
    env: StorageEnv, clock: Clock
) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    directory.get_or_create("t", 0, CONFIG).append(make_batch(), leader_epoch=0)
    directory.close()
    env.fs.rename(env.path("t-0"), env.path("t-0.5-1-delete"))
    env.fs.open(env.path(RECOVERY_POINT_CHECKPOINT + ".tmp"), create=True).close()
    env.fs.mkdir(env.path("not a partition"))
    reopened = LogDirectory.open(env.root, env.fs, clock)
    assert len(reopened) == 0
    assert sorted(env.fs.listdir(env.root)) == sorted(
        [LOG_START_OFFSET_CHECKPOINT, RECOVERY_POINT_CHECKPOINT, "not a partition"]
    )


def test_get_or_create_applies_a_new_config(env: StorageEnv, clock: Clock) -> None:
    directory = LogDirectory.open(env.root, env.fs, clock)
    directory.get_or_create("t", 0, CONFIG)
    changed = LogConfig(segment_bytes=5_000)
    assert directory.get_or_create("t", 0, changed).config == changed

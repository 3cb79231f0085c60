"""The FileSystem contract on both implementations, and the MemoryFileSystem crash model."""

from __future__ import annotations

import os
import socket

import pytest

from tests.storage.conftest import StorageEnv
from tidelog.storage.filesystem import FaultPoint, FileRange, MemoryFileSystem


def test_append_pread_truncate(env: StorageEnv) -> None:
    handle = env.fs.open(env.path("a"), create=True)
    handle.append(b"hello ")
    handle.append(memoryview(b"world"))
    assert handle.size() == 11
    assert handle.pread(6, 5) == b"world"
    assert handle.pread(8, 100) == b"rld"
    assert handle.pread(11, 4) == b""
    handle.truncate(5)
    handle.append(b"!")
    assert env.fs.read_file(env.path("a")) == b"hello!"
    assert env.fs.file_size(env.path("a")) == 6
    handle.fsync()
    handle.close()


def test_open_without_create_needs_the_file(env: StorageEnv) -> None:
    with pytest.raises(FileNotFoundError):
        env.fs.open(env.path("missing"))


def test_directory_operations(env: StorageEnv) -> None:
    fs = env.fs
    fs.mkdir(env.path("d"))
    with pytest.raises(FileExistsError):
        fs.mkdir(env.path("d"))
    for name in ("b", "a"):
        fs.open(env.path("d", name), create=True).close()
    assert fs.listdir(env.path("d")) == ["a", "b"]
    assert fs.is_dir(env.path("d")) and not fs.is_dir(env.path("d", "a"))
    fs.rename(env.path("d", "a"), env.path("d", "b"))
    assert fs.listdir(env.path("d")) == ["b"]
    fs.remove(env.path("d", "b"))
    assert not fs.exists(env.path("d", "b"))
    fs.fsync_dir(env.path("d"))
    fs.rmdir(env.path("d"))
    assert not fs.exists(env.path("d"))


def test_file_range_reads_bytes_and_exposes_a_descriptor_only_on_os(env: StorageEnv) -> None:
    handle = env.fs.open(env.path("r"), create=True)
    handle.append(b"0123456789")
    file_range = FileRange(handle, 2, 5)
    assert file_range.read_bytes() == b"23456"
    fd = file_range.fileno()
    if env.kind == "memory":
        assert fd is None
        return
    assert fd is not None
    left, right = socket.socketpair()
    with left, right:
        sent = os.sendfile(left.fileno(), fd, file_range.position, file_range.length)
        assert right.recv(100) == b"23456"[:sent]


@pytest.mark.parametrize(
    "point",
    [FaultPoint.WRITE, FaultPoint.FSYNC, FaultPoint.TRUNCATE, FaultPoint.RENAME, FaultPoint.OPEN],
)
def test_fault_points_fail_the_next_matching_operation_once(
    env: StorageEnv, point: FaultPoint
) -> None:
    fs = env.fs
    handle = fs.open(env.path("f"), create=True)
    env.faults.arm(point, path_contains=env.path("f"))
    operations = {
        FaultPoint.WRITE: lambda: handle.append(b"x"),
        FaultPoint.FSYNC: handle.fsync,
        FaultPoint.TRUNCATE: lambda: handle.truncate(0),
        FaultPoint.RENAME: lambda: fs.rename(env.path("f"), env.path("g")),
        FaultPoint.OPEN: lambda: fs.open(env.path("f")),
    }
    with pytest.raises(OSError):
        operations[point]()
    fired_path = env.path("f")
    if point is FaultPoint.RENAME:
        fired_path = f"{env.path('f')} -> {env.path('g')}"
    assert env.faults.fired == [(point, fired_path)]
    operations[point]()  # fires once only


def test_failing_write_can_leave_a_prefix(env: StorageEnv) -> None:
    handle = env.fs.open(env.path("w"), create=True)
    env.faults.arm(FaultPoint.WRITE, written_bytes=3)
    with pytest.raises(OSError):
        handle.append(b"abcdef")
    assert handle.pread(0, 10) == b"abc"


def test_path_filter_spares_other_files(env: StorageEnv) -> None:
    other = env.fs.open(env.path("other"), create=True)
    target = env.fs.open(env.path("target"), create=True)
    env.faults.arm(FaultPoint.FSYNC, path_contains="target")
    other.fsync()
    with pytest.raises(OSError):
        target.fsync()


# -- the crash model (MemoryFileSystem only: a real kernel cannot be crashed from a test)


def _crash_outcomes(seeds: range) -> list[bytes]:
    outcomes = []
    for seed in seeds:
        fs = MemoryFileSystem(seed=seed)
        fs.mkdir("/d")
        fs.fsync_dir("/")
        handle = fs.open("/d/f", create=True)
        handle.append(b"durable|")
        handle.fsync()
        fs.fsync_dir("/d")
        handle.append(b"volatile")
        fs.crash()
        outcomes.append(fs.read_file("/d/f"))
    return outcomes


def test_crash_keeps_fsynced_bytes_and_cuts_or_tears_the_rest() -> None:
    outcomes = _crash_outcomes(range(200))
    assert all(outcome.startswith(b"durable|") for outcome in outcomes)
    tails = {outcome[len(b"durable|") :] for outcome in outcomes}
    assert b"" in tails and b"volatile" in tails
    assert any(b"volatile".startswith(tail) and 0 < len(tail) < 8 for tail in tails)
    assert any(not b"volatile".startswith(tail) for tail in tails), "no junk tail seen"


def test_crash_is_reproducible_from_its_seed() -> None:
    assert _crash_outcomes(range(20)) == _crash_outcomes(range(20))


def test_crash_reverts_unsynced_directory_entries_per_name() -> None:
    kept_new = kept_old = 0
    for seed in range(100):
        fs = MemoryFileSystem(seed=seed)
        fs.mkdir("/d")
        fs.fsync_dir("/")
        fs.open("/d/old", create=True).fsync()
        fs.fsync_dir("/d")
        fs.open("/d/new", create=True).fsync()
        fs.remove("/d/old")
        fs.crash()
        names = fs.listdir("/d")
        kept_new += "new" in names
        kept_old += "old" in names
    assert 0 < kept_new < 100 and 0 < kept_old < 100


def test_rename_is_atomic_per_name_and_durable_after_fsync_dir() -> None:
    for seed in range(50):
        fs = MemoryFileSystem(seed=seed)
        fs.mkdir("/d")
        fs.fsync_dir("/")
        first = fs.open("/d/cp", create=True)
        first.append(b"old")
        first.fsync()
        fs.fsync_dir("/d")
        temp = fs.open("/d/cp.tmp", create=True)
        temp.append(b"new")
        temp.fsync()
        fs.rename("/d/cp.tmp", "/d/cp")
        if seed % 2:
            fs.fsync_dir("/d")
        fs.crash()
        assert fs.read_file("/d/cp") in ({b"new"} if seed % 2 else {b"old", b"new"})


def test_handles_die_with_the_crash() -> None:
    fs = MemoryFileSystem(seed=1)
    handle = fs.open("/f", create=True)
    fs.crash()
    with pytest.raises(OSError):
        handle.append(b"x")


def test_unsynced_truncation_is_all_or_nothing() -> None:
    results = set()
    for seed in range(40):
        fs = MemoryFileSystem(seed=seed)
        handle = fs.open("/f", create=True)
        fs.fsync_dir("/")
        handle.append(b"abcdef")
        handle.fsync()
        handle.truncate(2)
        fs.crash()
        results.add(fs.read_file("/f"))
    assert results == {b"ab", b"abcdef"}

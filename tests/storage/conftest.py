"""Fixtures shared by the storage tests: every test that touches files runs on both
filesystems, through the `env` fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidelog.storage.filesystem import FaultPoints, FileSystem, MemoryFileSystem, OsFileSystem


@dataclass
class Clock:
    """A settable wall clock in milliseconds, as the storage layer expects."""

    now: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class StorageEnv:
    kind: str
    fs: FileSystem
    faults: FaultPoints
    root: str

    def path(self, *names: str) -> str:
        return "/".join([self.root, *names])


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_env(kind: str, tmp_path: Path) -> StorageEnv:
    faults = FaultPoints()
    if kind == "memory":
        fs: FileSystem = MemoryFileSystem(seed=0, faults=faults)
        root = "/data"
    else:
        fs = OsFileSystem(faults=faults)
        root = os.fspath(tmp_path / "data")
    fs.mkdir(root)
    return StorageEnv(kind, fs, faults, root)


@pytest.fixture(params=["os", "memory"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageEnv]:
    yield make_env(request.param, tmp_path)

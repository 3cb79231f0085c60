"""The filesystem seam: every byte the storage layer reads or writes goes through here.

`FileSystem` is the protocol the log uses; `OsFileSystem` is the real one and
`MemoryFileSystem` models a kernel page cache in memory so tests can crash it.

Contract shared by both implementations:

- Paths are POSIX strings. Files are opened read/append: `append` always writes at the end,
  `pread` reads anywhere, `truncate` may shrink a file.
- Nothing is durable until `fsync` (file contents) and `fsync_dir` (the directory entries
  that name the file: creation, rename, removal). A crash may keep, drop or tear anything
  newer than that.
- Failures are `OSError`s. Named fault points (`FaultPoints`) make the next matching
  operation fail with EIO, so tests can exercise every error path on either implementation.
"""

from __future__ import annotations

import enum
import errno
import os
import posixpath
import random
from dataclasses import dataclass
from typing import Protocol


class FileHandle(Protocol):
    """An open file: reads anywhere, writes only at the end."""

    @property
    def path(self) -> str: ...

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data` at the end of the file."""

    def pread(self, position: int, size: int) -> bytes:
        """Up to `size` bytes from `position`; shorter only at the end of the file."""

    def size(self) -> int: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def fileno(self) -> int | None:
        """The OS file descriptor, for `os.sendfile`; None when there is none."""

    def close(self) -> None: ...


class FileSystem(Protocol):
    """The operations the storage layer needs; see the module docstring for the contract."""

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        """Open for read and append; `create` makes a missing file, else FileNotFoundError."""

    def read_file(self, path: str) -> bytes: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` (a file, or a directory when `dst` does not exist)."""

    def remove(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""

    def mkdir(self, path: str) -> None:
        """Create one directory; FileExistsError if the name is taken."""

    def rmdir(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def file_size(self, path: str) -> int: ...


@dataclass(frozen=True, slots=True)
class FileRange:
    """`length` bytes of `file` from `position`: what a fetch sends.

    The range keeps its file open: a segment deleted after the range was handed out stays
    readable through it (unlink semantics) until the range is dropped. Truncation is not
    undone, so a consumer must treat a short read as the end of the range.
    """

    file: FileHandle
    position: int
    length: int

    @property
    def nbytes(self) -> int:
        """`length` under the name the protocol's `Splice` (a response chunk) uses."""
        return self.length

    def fileno(self) -> int | None:
        """A descriptor for `os.sendfile(sock, fd, position, length)`, or None."""
        return self.file.fileno()

    def read_bytes(self) -> bytes:
        return self.file.pread(self.position, self.length)


class FaultPoint(enum.Enum):
    """Operations a test can make fail."""

    OPEN = "open"
    WRITE = "write"
    FSYNC = "fsync"
    FSYNC_DIR = "fsync_dir"
    RENAME = "rename"
    REMOVE = "remove"
    TRUNCATE = "truncate"


@dataclass(slots=True)
class _ArmedFault:
    point: FaultPoint
    path_contains: str
    remaining: int
    written_bytes: int


class FaultPoints:
    """Named fault points: `arm(FaultPoint.FSYNC)` fails the next fsync with EIO.

    A fault fires on operations whose path contains `path_contains` (a rename's path is
    `"<src> -> <dst>"`), `count` times. A failing write first writes `written_bytes` of its
    data, which models a short write.
    """

    def __init__(self) -> None:
        self._armed: list[_ArmedFault] = []
        self.fired: list[tuple[FaultPoint, str]] = []

    def arm(
        self,
        point: FaultPoint,
        *,
        path_contains: str = "",
        count: int = 1,
        written_bytes: int = 0,
    ) -> None:
        if count < 1 or written_bytes < 0:
            raise ValueError("count must be >= 1 and written_bytes >= 0")
        self._armed.append(_ArmedFault(point, path_contains, count, written_bytes))

    def disarm_all(self) -> None:
        self._armed.clear()

    def check(self, point: FaultPoint, path: str) -> int | None:
        """None when no fault fires; else the bytes a failing write still writes.

        The caller raises `fault_error` after carrying out the partial effect.
        """
        for fault in self._armed:
            if fault.point is point and fault.path_contains in path:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._armed.remove(fault)
                self.fired.append((point, path))
                return fault.written_bytes
        return None


def fault_error(point: FaultPoint, path: str) -> OSError:
    return OSError(errno.EIO, f"injected {point.value} fault", path)


def _check_fault(faults: FaultPoints | None, point: FaultPoint, path: str) -> None:
    if faults is not None and faults.check(point, path) is not None:
        raise fault_error(point, path)


# --------------------------------------------------------------------------------------------
# The real filesystem


class OsFileHandle:
    """A file opened with O_APPEND; unbuffered, one syscall per call."""

    def __init__(self, path: str, fd: int, faults: FaultPoints | None) -> None:
        self._path = path
        self._fd = fd
        self._faults = faults

    @property
    def path(self) -> str:
        return self._path

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if self._faults is not None:
            written = self._faults.check(FaultPoint.WRITE, self._path)
            if written is not None:
                if written:
                    os.write(self._fd, memoryview(data).cast("B")[:written])
                raise fault_error(FaultPoint.WRITE, self._path)
        done = os.write(self._fd, data)
        if done < len(data):
            view = memoryview(data).cast("B")
            while done < len(view):
                done += os.write(self._fd, view[done:])

    def pread(self, position: int, size: int) -> bytes:
        chunk = os.pread(self._fd, size, position)
        if len(chunk) == size or not chunk:
            return chunk
        parts = [chunk]
        got = len(chunk)
        while got < size:
            more = os.pread(self._fd, size - got, position + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def truncate(self, size: int) -> None:
        _check_fault(self._faults, FaultPoint.TRUNCATE, self._path)
        os.ftruncate(self._fd, size)

    def fsync(self) -> None:
        _check_fault(self._faults, FaultPoint.FSYNC, self._path)
        os.fsync(self._fd)

    def fileno(self) -> int | None:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # A FileRange may outlive its segment; the last reference closes the descriptor.
        self.close()


class OsFileSystem:
    """The operating system's filesystem, with optional fault points for tests."""

    def __init__(self, faults: FaultPoints | None = None) -> None:
        self.faults = faults

    def open(self, path: str, *, create: bool = False) -> OsFileHandle:
        _check_fault(self.faults, FaultPoint.OPEN, path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return OsFileHandle(path, os.open(path, flags, 0o644), self.faults)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def rename(self, src: str, dst: str) -> None:
        _check_fault(self.faults, FaultPoint.RENAME, f"{src} -> {dst}")
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.REMOVE, path)
        os.remove(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.REMOVE, path)
        os.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.FSYNC_DIR, path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size


# --------------------------------------------------------------------------------------------
# The in-memory filesystem


class _Inode:
    """File contents as the page cache sees them (`data`) and as the disk has them."""

    __slots__ = ("data", "durable", "durable_is_prefix")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = bytearray()
        # True while `durable` is a prefix of `data`: only appends happened since the last
        # fsync, so a crash can only cut the unsynced tail.
        self.durable_is_prefix = True


class _Dir:
    __slots__ = ("durable_entries", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, _Inode | _Dir] = {}
        self.durable_entries: dict[str, _Inode | _Dir] = {}


class MemoryFileHandle:
    """An open file of a `MemoryFileSystem`; invalid after the filesystem crashes."""

    def __init__(self, fs: MemoryFileSystem, path: str, inode: _Inode) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._generation = fs.generation
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _live(self) -> _Inode:
        if self._closed:
            raise ValueError(f"I/O on closed file {self._path}")
        if self._generation != self._fs.generation:
            raise OSError(errno.EBADF, "file handle from before a crash", self._path)
        return self._inode

    def append(self, data: bytes | bytearray | memoryview) -> None:
        inode = self._live()
        written = self._fs.faults.check(FaultPoint.WRITE, self._path)
        if written is not None:
            inode.data += memoryview(data).cast("B")[:written]
            raise fault_error(FaultPoint.WRITE, self._path)
        inode.data += data

    def pread(self, position: int, size: int) -> bytes:
        if position < 0 or size < 0:
            raise ValueError("negative position or size")
        return bytes(self._live().data[position : position + size])

    def size(self) -> int:
        return len(self._live().data)

    def truncate(self, size: int) -> None:
        inode = self._live()
        _check_fault(self._fs.faults, FaultPoint.TRUNCATE, self._path)
        if size < len(inode.data):
            del inode.data[size:]
        else:
            inode.data.extend(bytes(size - len(inode.data)))
        if size < len(inode.durable):
            inode.durable_is_prefix = False

    def fsync(self) -> None:
        inode = self._live()
        _check_fault(self._fs.faults, FaultPoint.FSYNC, self._path)
        if inode.durable_is_prefix:
            inode.durable += inode.data[len(inode.durable) :]
        else:
            inode.durable = bytearray(inode.data)
            inode.durable_is_prefix = True

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self._closed = True


class MemoryFileSystem:
    """A filesystem in memory that models what a crash does to un-fsynced state.

    `crash()` stands for power loss followed by a reboot. For each file, contents written
    since its last fsync are kept, lost, torn at a random byte, or torn and followed by
    junk (zeros or random bytes, as a filesystem may expose after a crash). For each
    directory entry changed since the directory's last fsync (create, rename, remove), the
    old or the new state survives, chosen per name. All open handles become invalid.
    Choices come from `random.Random(seed)`, so a failing run replays from its seed.
    """

    def __init__(self, seed: int = 0, faults: FaultPoints | None = None) -> None:
        self.seed = seed
        self.faults = faults if faults is not None else FaultPoints()
        self.generation = 0
        self._random = random.Random(seed)
        self._root = _Dir()

    # -- paths

    @staticmethod
    def _parts(path: str) -> list[str]:
        return [part for part in posixpath.normpath(path).split("/") if part and part != "."]

    def _lookup(self, path: str) -> _Inode | _Dir:
        node: _Inode | _Dir = self._root
        for part in self._parts(path):
            if not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            child = node.entries.get(part)
            if child is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
            node = child
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise PermissionError(errno.EPERM, "the root has no parent", path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not isinstance(parent, _Dir):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return parent, parts[-1]

    def _dir(self, path: str) -> _Dir:
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return node

    # -- FileSystem

    def open(self, path: str, *, create: bool = False) -> MemoryFileHandle:
        _check_fault(self.faults, FaultPoint.OPEN, path)
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if node is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            node = _Inode()
            parent.entries[name] = node
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return MemoryFileHandle(self, path, node)

    def read_file(self, path: str) -> bytes:
        node = self._lookup(path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return bytes(node.data)

    def rename(self, src: str, dst: str) -> None:
        _check_fault(self.faults, FaultPoint.RENAME, f"{src} -> {dst}")
        src_parent, src_name = self._parent(src)
        node = src_parent.entries.get(src_name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src)
        dst_parent, dst_name = self._parent(dst)
        existing = dst_parent.entries.get(dst_name)
        if isinstance(existing, _Dir) and (not isinstance(node, _Dir) or existing.entries):
            raise IsADirectoryError(errno.EISDIR, "cannot replace a directory", dst)
        del src_parent.entries[src_name]
        dst_parent.entries[dst_name] = node

    def remove(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.REMOVE, path)
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        del parent.entries[name]

    def listdir(self, path: str) -> list[str]:
        return sorted(self._dir(path).entries)

    def mkdir(self, path: str) -> None:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise FileExistsError(errno.EEXIST, "file exists", path)
        parent.entries[name] = _Dir()

    def rmdir(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.REMOVE, path)
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if not isinstance(node, _Dir):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if node.entries:
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)
        del parent.entries[name]

    def fsync_dir(self, path: str) -> None:
        _check_fault(self.faults, FaultPoint.FSYNC_DIR, path)
        directory = self._dir(path)
        directory.durable_entries = dict(directory.entries)

    def exists(self, path: str) -> bool:
        try:
            self._lookup(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def is_dir(self, path: str) -> bool:
        try:
            return isinstance(self._lookup(path), _Dir)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def file_size(self, path: str) -> int:
        node = self._lookup(path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return len(node.data)

    # -- crash model

    def crash(self) -> None:
        """Lose, keep or tear everything that was not made durable; see the class doc."""
        self.generation += 1
        # Armed faults belong to the process that crashed.
        self.faults.disarm_all()
        seen_inodes: set[int] = set()
        self._crash_dir(self._root, seen_inodes)

    def _crash_dir(self, directory: _Dir, seen_inodes: set[int]) -> None:
        survivors: dict[str, _Inode | _Dir] = {}
        for name in sorted(directory.entries.keys() | directory.durable_entries.keys()):
            current = directory.entries.get(name)
            durable = directory.durable_entries.get(name)
            chosen = current if current is durable or self._random.random() < 0.5 else durable
            if chosen is not None:
                survivors[name] = chosen
        directory.entries = survivors
        directory.durable_entries = dict(survivors)
        for node in survivors.values():
            if id(node) in seen_inodes:
                continue
            seen_inodes.add(id(node))
            if isinstance(node, _Dir):
                self._crash_dir(node, seen_inodes)
            else:
                self._crash_inode(node)

    def _crash_inode(self, inode: _Inode) -> None:
        rng = self._random
        if not inode.durable_is_prefix:
            # A truncation since the last fsync: either everything reached the disk or
            # nothing did.
            if rng.random() < 0.5:
                inode.data = bytearray(inode.durable)
        elif len(inode.data) > len(inode.durable):
            unsynced_bytes = len(inode.data) - len(inode.durable)
            outcome = rng.randrange(4)
            if outcome == 0:
                del inode.data[len(inode.durable) :]
            elif outcome >= 2:
                cut = len(inode.durable) + rng.randrange(unsynced_bytes + 1)
                del inode.data[cut:]
                if outcome == 3:
                    junk_bytes = rng.randrange(1, 64)
                    junk = bytes(junk_bytes) if rng.random() < 0.5 else rng.randbytes(junk_bytes)
                    inode.data += junk
        inode.durable = bytearray(inode.data)
        inode.durable_is_prefix = True

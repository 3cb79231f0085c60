"""One tidelog broker process for the interop tests, as a user runs it.

`tidelog_broker` (session scope) starts `python -m broker.cli broker --config ...` on
127.0.0.1 with an ephemeral port, auto-created topics and `num.partitions = 3`, waits for the
`tidelog ready: bootstrap HOST:PORT` line, and at the end of the session stops it with
SIGTERM, requiring a clean exit (status 0) and no traceback in its log. Tests share it, so
each test uses topics of its own (`unique_topic`). Its consumer groups are tuned for tests:
no initial rebalance delay, 4 `__consumer_offsets` partitions, and session timeouts down to
1 s, so a member that dies without leaving is noticed quickly. A test that needs a broker of
its own (to kill and restart it) uses `run_broker_process`, which starts the same way.

`BrokerProcess.stored_batches(topic, partition)` reads the batch headers the broker wrote
to disk (Kafka's layout: `<data_dir>/<topic>-<partition>/<base offset>.log`), so a test can
tell that a client really compressed with the codec it was asked for: clients quietly send
uncompressed batches when they think the broker cannot take the codec, or when compressing
would not make the batch smaller (so sample values are compressible).

The fixtures are synchronous: the clients under test (kafka-python, aiokafka in a
subprocess, kcat) block, so the tests that drive them are plain functions.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidelog.client.protocol.records import BatchHeader, iter_batches

REPO = Path(__file__).resolve().parents[2]
READY_PREFIX = "tidelog ready: bootstrap "
PARTITIONS = 3
STARTUP_TIMEOUT_S = 20
SHUTDOWN_TIMEOUT_S = 15

_topic_numbers = itertools.count()


@dataclass(frozen=True)
class BrokerProcess:
    host: str
    port: int
    partitions: int
    """Partitions of every auto-created topic."""
    data_dir: Path
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def stored_batches(self, topic: str, partition: int) -> list[BatchHeader]:
        """Headers of the batches in the partition's segment files, in offset order
        (CRCs checked)."""
        segments = sorted((self.data_dir / f"{topic}-{partition}").glob("*.log"))
        return [header for path in segments for header in iter_batches(path.read_bytes())]


@dataclass(frozen=True)
class SampleRecord:
    """A record as a test sends it; `offset` is its expected offset in `partition`."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


SAMPLE_TIMESTAMP_MS = 1_700_000_000_000


def sample_records(count: int, partitions: int) -> list[SampleRecord]:
    """`count` records spread round-robin over `partitions`, in send order.

    They cover what a broker must carry unchanged: a null key, a null value (tombstone), an
    empty value, binary bytes, repeated and non-ASCII header names, an empty header value,
    explicit timestamps. Values are long and repetitive so every codec shrinks them.
    """
    records = []
    for i in range(count):
        partition = i % partitions
        key: bytes | None = None if i == 1 else b"key-%d" % i
        value: bytes | None = b"value-%d-" % i + b"\x00\xffabc" * 40
        if i == 2:
            value = None
        elif i == 4:
            value = b""
        headers = (("trace", bytes([i, 0, 255])), ("dup", b"1"), ("dup", b"2"), ("grüße", b""))
        records.append(
            SampleRecord(
                partition=partition,
                offset=i // partitions,
                key=key,
                value=value,
                headers=headers,
                timestamp_ms=SAMPLE_TIMESTAMP_MS + i,
            )
        )
    return records


def read_ready_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The first stdout line of `process`; fails if it has not come within `timeout_s`."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffered:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise AssertionError(f"no ready line within {timeout_s} s: {buffered!r}")
            if not selector.select(remaining_s):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"broker stdout closed before a whole line: {buffered!r}")
            buffered += chunk
    return buffered.split(b"\n", 1)[0].decode()


GROUP_MIN_SESSION_TIMEOUT_MS = 1000


def write_broker_config(config_path: Path, data_dir: Path) -> None:
    """The interop broker's TOML config (see the module docstring)."""
    config_path.write_text(
        f"data_dir = {json.dumps(str(data_dir))}\n"  # a TOML basic string
        "auto.create.topics.enable = true\n"
        f"num.partitions = {PARTITIONS}\n"
        "group.initial.rebalance.delay.ms = 0\n"
        f"group.min.session.timeout.ms = {GROUP_MIN_SESSION_TIMEOUT_MS}\n"
        "offsets.topic.num.partitions = 4\n"
        '[[listeners]]\nhost = "127.0.0.1"\nport = 0\n'
    )


@contextmanager
def run_broker_process(
    work_dir: Path, data_dir: Path, name: str = "broker"
) -> Iterator[tuple[BrokerProcess, subprocess.Popen[bytes]]]:
    """Start a broker on `data_dir` (config and log as `work_dir/<name>.toml|.log`) and yield
    it once it is ready, with its process.

    On leaving, a broker still running is stopped with SIGTERM and must exit with status 0
    within `SHUTDOWN_TIMEOUT_S`; one the test already stopped (say with SIGKILL) is only
    reaped. Either way its log must hold no traceback.
    """
    config_path = work_dir / f"{name}.toml"
    write_broker_config(config_path, data_dir)
    log_path = work_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidelog.broker.cli", "broker", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            cwd=REPO,
        )
    try:
        line = read_ready_line(process, STARTUP_TIMEOUT_S)
        assert line.startswith(READY_PREFIX), line
        host, port = line.removeprefix(READY_PREFIX).rsplit(":", 1)
        yield BrokerProcess(host, int(port), PARTITIONS, data_dir, log_path), process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(SHUTDOWN_TIMEOUT_S) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text


@pytest.fixture(scope="session")
def tidelog_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    work_dir = tmp_path_factory.mktemp("interop-broker")
    with run_broker_process(work_dir, work_dir / "data") as (broker, _):
        yield broker


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test in the session uses (auto-created on first use)."""
    test_name = "".join(c if c.isalnum() else "-" for c in request.node.name)
    return f"{test_name[:180]}-{next(_topic_numbers)}"

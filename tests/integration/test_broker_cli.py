"""The `tidelog` command as a user runs it: a subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.integration.wire import WireClient, metadata_request
from tidelog.broker.cli import main
from tidelog.broker.network import TcpNetwork

REPO = Path(__file__).resolve().parents[2]
READY_PREFIX = "tidelog ready: bootstrap "
TIMEOUT_S = 20


@dataclass
class Subprocess:
    process: trio.Process
    host: str
    port: int
    stderr_path: Path
    ready_after_s: float


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    buffered = b""
    while b"\n" not in buffered:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"stdout closed before a whole line: {buffered!r}")
        buffered += chunk
    return buffered.split(b"\n", 1)[0].decode()


@asynccontextmanager
async def tidelog(tmp_path: Path, *args: str) -> AsyncIterator[Subprocess]:
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        started = time.monotonic()
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tidelog.broker.cli", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT_S):
            line = await read_line(process.stdout)
        ready_after_s = time.monotonic() - started
        assert line.startswith(READY_PREFIX), line
        host, port = line.removeprefix(READY_PREFIX).rsplit(":", 1)
        yield Subprocess(process, host, int(port), stderr_path, ready_after_s)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_dev_serves_then_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ("dev", "--port", "0", "--data-dir", str(data_dir), "--partitions", "3")
    async with tidelog(tmp_path, *args) as broker:
        assert broker.host == "127.0.0.1" and broker.port > 0
        async with await WireClient.connect(TcpNetwork(), broker.host, broker.port) as client:
            response = await client.request(3, 4, metadata_request("from-cli"))
            assert response["topics"][0]["error_code"] == 0
            assert len(response["topics"][0]["partitions"]) == 3
            assert [(b["host"], b["port"]) for b in response["brokers"]] == [
                (broker.host, broker.port)
            ]
        broker.process.send_signal(signal.SIGTERM)
        with trio.fail_after(TIMEOUT_S):
            assert await broker.process.wait() == 0
    log_text = broker.stderr_path.read_text()
    assert "node 0 stopped" in log_text
    assert "Traceback" not in log_text
    # A clean shutdown leaves checkpoints, so the next start has nothing to scan.
    assert (data_dir / "recovery-point-offset-checkpoint").exists()


async def test_sigint_is_a_clean_shutdown_too(tmp_path: Path) -> None:
    async with tidelog(tmp_path, "dev", "--port", "0", "--data-dir", str(tmp_path)) as broker:
        broker.process.send_signal(signal.SIGINT)
        with trio.fail_after(TIMEOUT_S):
            assert await broker.process.wait() == 0


async def test_broker_command_reads_a_toml_config(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(
        'node.id = 5\ndata_dir = "data"\nnum.partitions = 2\n'
        '[[listeners]]\nhost = "127.0.0.1"\nport = 0\n'
    )
    async with tidelog(tmp_path, "broker", "--config", str(config)) as broker:
        async with await WireClient.connect(TcpNetwork(), broker.host, broker.port) as client:
            response = await client.request(3, 4, metadata_request("two"))
        assert response["controller_id"] == 5
        assert len(response["topics"][0]["partitions"]) == 2
        broker.process.send_signal(signal.SIGTERM)
        with trio.fail_after(TIMEOUT_S):
            assert await broker.process.wait() == 0
    assert (tmp_path / "data" / "meta.properties").read_text().count("node.id=5") == 1


def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("log.retention.msec = 5\n")
    assert main(["broker", "--config", str(config)]) == 2
    assert "log.retention.msec: unknown configuration key" in capsys.readouterr().err


@pytest.mark.parametrize("nodes", ["1", "3"])
def test_dev_refuses_a_partition_count_below_one(
    nodes: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dev", "--nodes", nodes, "--port", "9092", "--data-dir", str(tmp_path / "data")]
    assert main([*args, "--partitions", "0"]) == 2
    assert "num_partitions: 0 is outside [1, 100000]" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_data_dir_of_another_node_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meta.properties").write_text("version=1\ncluster.id=abc\nnode.id=9\n")
    assert main(["dev", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    assert "belongs to node 9" in capsys.readouterr().err


def test_a_port_in_use_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dev", "--port", str(port), "--data-dir", str(tmp_path)]) == 1
    assert "cannot start" in capsys.readouterr().err


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that are free right now."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports")


async def test_dev_nodes_runs_a_local_cluster_and_stops_it_on_sigint(tmp_path: Path) -> None:
    port = free_port_run(6)
    data_dir = tmp_path / "cluster"
    args = ["dev", "--nodes", "3", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--partitions", "2"]
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tidelog.broker.cli", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
        )
    pids = []
    try:
        assert process.stdout is not None
        lines: list[str] = []
        buffered = b""
        with trio.fail_after(TIMEOUT_S):
            while len(lines) < 4:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"stdout closed after {lines}"
                *complete, buffered = (buffered + chunk).split(b"\n")
                lines += [line.decode() for line in complete]
        addresses = [f"127.0.0.1:{port + 2 * i}" for i in range(3)]
        for node_id, (line, address) in enumerate(zip(lines, addresses, strict=False), 1):
            name, number, pid_word, pid, shown = line.split()
            assert (name, number, pid_word, shown) == ("node", str(node_id), "pid", address)
            pids.append(int(pid))
        assert lines[3] == READY_PREFIX + ",".join(addresses)
        node2_config = (data_dir / "node2.toml").read_text()
        assert node2_config.count(f"port = {port + 3}") == 1
        assert "num_partitions = 2" in node2_config.splitlines()
        for node_port in (port, port + 2, port + 4):
            with trio.fail_after(TIMEOUT_S):  # the last unfencing reaches every node soon
                while True:
                    async with await WireClient.connect(
                        TcpNetwork(), "127.0.0.1", node_port
                    ) as client:
                        response = await client.request(3, 12, metadata_request())
                    if sorted(b["node_id"] for b in response["brokers"]) == [1, 2, 3]:
                        break
                    await trio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(TIMEOUT_S):
            assert await process.wait() == 0
        for pid in pids:  # every node is gone, not just the supervisor
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.returncode is None:
            process.kill()
            await process.wait()

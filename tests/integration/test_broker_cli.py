"""The `tidelog` command as a user runs it: a subprocess on 127.0.0.1."""

from __future__ import annotations

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
    async with tidelog(tmp_path, "dev", "--port", "0", "--data-dir", str(data_dir)) as broker:
        assert broker.host == "127.0.0.1" and broker.port > 0
        async with await WireClient.connect(TcpNetwork(), broker.host, broker.port) as client:
            response = await client.request(3, 4, metadata_request("from-cli"))
            assert response["topics"][0]["error_code"] == 0
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

"""The client-side `tidelog` commands, run as a user runs them: a subprocess per command,
against an in-process broker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tidelog.broker.config import ListenerConfig, TlsConfig
from tidelog.broker.metadata.records import Endpoint, RegisterBrokerRecord

_CONSOLE_SCRIPT = Path(sys.executable).with_name("tidelog")
TIDELOG = (
    [str(_CONSOLE_SCRIPT)]
    if _CONSOLE_SCRIPT.exists()
    else [sys.executable, "-m", "tidelog.broker.cli"]
)
COMMAND_TIMEOUT_S = 20
SHORT_TIMEOUT_MS = "300"


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.decode().splitlines()

    @property
    def error_line(self) -> str:
        """The one line a failed command writes to stderr."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        return lines[0]


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_BROKERS"}
    env.update(extra)
    return env


async def run_tidelog(*args: str, stdin: bytes = b"", env: Mapping[str, str] = {}) -> Result:
    with trio.fail_after(COMMAND_TIMEOUT_S):
        completed = await trio.run_process(
            [*TIDELOG, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_environment(env),
        )
    return Result(completed.returncode, completed.stdout, completed.stderr.decode())


class Cli:
    """Runs `tidelog` commands against one broker (`--brokers` added to each)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def __call__(self, *args: str, stdin: bytes = b"") -> Result:
        return await run_tidelog(*args, f"--brokers={self.bootstrap}", stdin=stdin)

    async def ok(self, *args: str, stdin: bytes = b"") -> Result:
        result = await self(*args, stdin=stdin)
        assert result.status == 0, result.stderr
        return result

    async def produce(self, topic: str, *lines: str, options: tuple[str, ...] = ()) -> None:
        data = "".join(f"{line}\n" for line in lines).encode()
        result = await self.ok("produce", topic, *options, stdin=data)
        noun = "record" if len(lines) == 1 else "records"
        assert result.stderr == f"tidelog: {len(lines)} {noun} produced to {topic!r}\n"

    async def values(self, topic: str, *options: str) -> list[str]:
        return (await self.ok("consume", topic, "--format", "%v\\n", *options)).lines

    async def describe(self, topic: str) -> dict[str, Any]:
        documents = json.loads(
            (await self.ok("topic", "describe", topic, "--format", "json")).stdout
        )
        assert [d["name"] for d in documents] == [topic]
        document: dict[str, Any] = documents[0]
        return document


@pytest.fixture
def cli(broker: RunningBroker) -> Cli:
    return Cli(broker.bootstrap)


async def concurrently(*calls: Awaitable[Any]) -> list[Any]:
    """Await independent commands at the same time (each is its own process); results in
    argument order."""
    results: dict[int, Any] = {}

    async def run(index: int, call: Awaitable[Any]) -> None:
        results[index] = await call

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run, index, call)
    return [results[index] for index in range(len(calls))]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- topics ------------------------------------------------------------------------------


async def test_topic_create_list_describe_delete(cli: Cli, broker: RunningBroker) -> None:
    created = await cli.ok(
        "topic", "create", "orders", "--partitions", "3", "--config", "retention.ms=3600000"
    )
    assert created.stdout == b""  # confirmations go to stderr
    assert "created topic 'orders'" in created.stderr

    again, if_not_exists, listed, listed_json, document, text = await concurrently(
        cli("topic", "create", "orders", "--partitions", "3"),
        cli("topic", "create", "orders", "--if-not-exists"),
        cli.ok("topic", "list"),
        cli.ok("topic", "list", "--format", "json"),
        cli.describe("orders"),
        cli.ok("topic", "describe", "orders"),
    )
    assert again.status == 1
    assert again.error_line == "tidelog: error: topic 'orders' already exists"
    assert if_not_exists.status == 0
    assert "orders" in listed.lines
    assert "orders" in json.loads(listed_json.stdout)

    node_id = broker.broker.config.node_id
    assert document["partition_count"] == 3
    assert document["replication_factor"] == 1
    assert document["partitions"] == [
        {
            "partition": index,
            "leader": node_id,
            "leader_epoch": document["partitions"][index]["leader_epoch"],
            "replicas": [node_id],
            "isr": [node_id],
            "offline_replicas": [],
            "under_replicated": False,
            "offline": False,
        }
        for index in range(3)
    ]
    configs = document["configs"]
    assert isinstance(configs, dict)
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["default"] is False
    assert configs["cleanup.policy"]["default"] is True

    lines = text.lines
    assert "PartitionCount: 3" in lines[0] and "Configs: retention.ms=3600000" in lines[0]
    assert [line.split("\t")[2] for line in lines[1:]] == [f"Partition: {i}" for i in range(3)]
    assert all("\tLeaderEpoch: " in line and "REPLICATED" not in line for line in lines[1:])
    troubled = await cli.ok("topic", "describe", "--under-replicated-partitions")
    assert troubled.stdout == b""  # a single node's partitions are all fully in sync

    deleted = await cli.ok("topic", "delete", "orders")
    assert "deleted topic 'orders'" in deleted.stderr
    listed, gone, delete_again, delete_if_exists = await concurrently(
        cli.ok("topic", "list"),
        cli("topic", "describe", "orders"),
        cli("topic", "delete", "orders"),
        cli("topic", "delete", "orders", "--if-exists"),
    )
    assert "orders" not in listed.lines
    assert gone.status == 1
    assert gone.error_line == "tidelog: error: topic 'orders' does not exist"
    assert delete_again.error_line == "tidelog: error: topic 'orders' does not exist"
    assert delete_if_exists.status == 0


async def test_topic_alter_config_sets_and_deletes(cli: Cli) -> None:
    await cli.ok("topic", "create", "tuned")
    altered, rejected, missing, nothing = await concurrently(
        cli.ok("topic", "alter-config", "tuned", "--set", "retention.ms=60000"),
        cli("topic", "alter-config", "tuned", "--set", "no.such.config=1"),
        cli("topic", "alter-config", "absent", "--set", "retention.ms=1"),
        cli("topic", "alter-config", "tuned"),
    )
    assert "altered 1 config(s) of topic 'tuned'" in altered.stderr
    assert rejected.status == 1
    assert rejected.error_line.startswith("tidelog: error: INVALID_CONFIG: topic 'tuned'")
    assert missing.error_line == "tidelog: error: topic 'absent' does not exist"
    assert nothing.status == 2 and "nothing to change" in nothing.error_line

    configs = (await cli.describe("tuned"))["configs"]
    assert isinstance(configs, dict)
    assert configs["retention.ms"] == {
        "value": "60000",
        "source": "DYNAMIC_TOPIC_CONFIG",
        "default": False,
        "read_only": False,
        "sensitive": False,
    }
    await cli.ok("topic", "alter-config", "tuned", "--delete", "retention.ms")
    configs = (await cli.describe("tuned"))["configs"]
    assert isinstance(configs, dict)
    assert configs["retention.ms"]["default"] is True


# --- produce and consume -----------------------------------------------------------------


async def test_produce_from_stdin_then_consume_with_a_template(cli: Cli) -> None:
    stdin = b"user-1:signed up\r\nuser-2:logged in\nno key here"  # no final newline
    produced = await cli.ok(
        "produce", "events", "--key-separator", ":", "-H", "source=cli", "-H", "trace=", stdin=stdin
    )
    assert produced.stdout == b""
    assert produced.stderr.splitlines() == ["tidelog: 3 records produced to 'events'"]

    result, timestamps, as_json = await concurrently(
        cli.ok("consume", "events", "--format", "%t|%p|%o|%k|%v|%h|%K|%S\\n"),
        cli.ok("consume", "events", "-f", "%T %%\\t%o\\n"),
        cli.ok("consume", "events", "--json"),
    )
    assert result.lines == [
        "events|0|0|user-1|signed up|source=cli,trace=|6|9",
        "events|0|1|user-2|logged in|source=cli,trace=|6|9",
        "events|0|2||no key here|source=cli,trace=|-1|11",
    ]
    assert [line.split(" ")[1] for line in timestamps.lines] == ["%\t0", "%\t1", "%\t2"]

    records = [json.loads(line) for line in as_json.lines]
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [
        (0, "user-1", "signed up"),
        (1, "user-2", "logged in"),
        (2, None, "no key here"),
    ]
    assert records[0]["headers"] == [["source", "cli"], ["trace", ""]]
    assert records[0]["timestamp_type"] == "CreateTime"
    assert [r["timestamp"] for r in records] == [
        int(line.split(" ")[0]) for line in timestamps.lines
    ]


async def test_consume_offset_forms(cli: Cli) -> None:
    await cli.produce("log", *(f"r{i}" for i in range(5)))
    await cli.produce("log", "r5", "r6")
    everything = [f"r{i}" for i in range(7)]

    forms = {
        "start": everything,
        "end": [],
        "3": everything[3:],
        "99": [],
        "-2": ["r5", "r6"],
        "-50": everything,
    }
    results = await concurrently(
        *(cli.values("log", f"--offset={form}") for form in forms),
        cli.values("log"),
        cli.values("log", "--offset", "2", "--count", "3"),
        cli.values("log", "--offset", "-3", "--count", "1"),
        cli.ok("consume", "log", "-f", "%T\\n"),
    )
    assert dict(zip(forms, results[: len(forms)], strict=True)) == forms
    default, counted, counted_from_end, stamped = results[len(forms) :]
    assert default == everything
    assert counted == ["r2", "r3", "r4"]
    assert counted_from_end == ["r4"]

    # @timestamp: the first record at or after it. The two produce commands ran one after
    # the other, so the second one's records carry later timestamps.
    stamps = [int(line) for line in stamped.lines]
    assert stamps[5] > stamps[4]
    from_time, after_last, bad, bad_template = await concurrently(
        cli.values("log", "--offset", f"@{stamps[5]}"),
        cli.values("log", "--offset", f"@{stamps[6] + 1}"),
        cli("consume", "log", "--offset", "yesterday"),
        cli("consume", "log", "--format", "%q"),
    )
    assert from_time == ["r5", "r6"]
    assert after_last == []
    assert bad.status == 2 and "expected start, end, N, -N or @TIMESTAMP_MS" in bad.stderr
    assert bad_template.status == 2 and "unknown template token %q" in bad_template.stderr


async def test_relative_offsets_and_partition_selection_are_per_partition(cli: Cli) -> None:
    await cli.ok("topic", "create", "split", "--partitions", "2")
    await concurrently(
        cli.produce("split", "a0", "a1", "a2", options=("--partition", "0")),
        cli.produce("split", "b0", "b1", options=("--partition", "1", "--compression", "gzip")),
    )
    last, second, missing = await concurrently(
        cli.ok("consume", "split", "--offset", "-1", "--format", "%p:%v\\n"),
        cli.ok("consume", "split", "--partition", "1", "--format", "%v\\n"),
        cli("consume", "split", "--partition", "7"),
    )
    assert sorted(last.lines) == ["0:a2", "1:b1"]
    assert second.lines == ["b0", "b1"]
    assert missing.error_line == "tidelog: error: topic 'split' has no partition 7 (it has 2)"


async def test_produce_from_a_file_with_acks_and_compression(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(200)))
    result = await cli.ok("produce", "bulk", "--file", str(path), "--acks", "1", "-z", "zstd")
    assert "200 records produced to 'bulk'" in result.stderr
    assert await cli.values("bulk") == [f"line {i}" for i in range(200)]
    missing = await cli("produce", "bulk", "--file", str(tmp_path / "absent.txt"))
    assert missing.status == 1 and "absent.txt" in missing.error_line


async def test_a_failed_delivery_is_a_failure(cli: Cli) -> None:
    await cli.ok("topic", "create", "tiny", "--config", "max.message.bytes=100")
    result = await cli("produce", "tiny", stdin=b"x" * 500 + b"\n")
    assert result.status == 1
    assert "tidelog: 0 records produced to 'tiny'" in result.stderr
    assert "1 of 1 records were not delivered: MESSAGE_TOO_LARGE" in result.stderr


async def _read_lines(stream: trio.abc.ReceiveStream, count: int, buffered: bytes) -> list[bytes]:
    """Read until `count` lines have arrived (with what is `buffered` already)."""
    while buffered.count(b"\n") < count:
        chunk = await stream.receive_some(65536)
        assert chunk, f"stdout closed after {buffered!r}"
        buffered += chunk
    return buffered.split(b"\n")


async def _start(cli: Cli, *args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [*TIDELOG, *args, f"--brokers={cli.bootstrap}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment({}),
    )


async def test_follow_prints_new_records_until_count(cli: Cli) -> None:
    await cli.produce("stream", "old")
    process = await _start(cli, "consume", "stream", "--follow", "--count", "2", "-f", "%v\\n")
    assert process.stdout is not None
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            # The old record arriving shows the consumer is running; the new one must follow.
            assert (await _read_lines(process.stdout, 1, b""))[0] == b"old"
            await cli.produce("stream", "new")
            assert await process.wait() == 0
            rest = b"".join([chunk async for chunk in _drain(process.stdout)])
        assert rest.startswith(b"new\n")
    finally:
        process.kill()


async def _drain(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    while chunk := await stream.receive_some(65536):
        yield bytes(chunk)


async def test_follow_exits_0_on_sigint(cli: Cli) -> None:
    await cli.produce("ticks", "t0")
    process = await _start(cli, "consume", "ticks", "--follow", "-f", "%v\\n")
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            lines = await _read_lines(process.stdout, 1, b"")
            await cli.produce("ticks", "t1")
            lines = await _read_lines(process.stdout, 2, b"\n".join(lines))
            assert lines[:2] == [b"t0", b"t1"]
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            stderr = await process.stderr.receive_some(65536)
        assert b"Traceback" not in stderr
    finally:
        process.kill()


async def test_a_closed_stdout_ends_consume_quietly(cli: Cli) -> None:
    # Far more than a pipe buffers, so the consumer is still writing when the reader goes.
    await cli.produce("many", *(f"{i:08} " + "x" * 100 for i in range(5000)))
    process = await _start(cli, "consume", "many")
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            await process.stdout.receive_some(16)
            await process.stdout.aclose()  # like `| head`: the reader goes away
            assert await process.wait() == 0
            stderr = await process.stderr.receive_some(65536)
        assert stderr == b""
    finally:
        process.kill()


# --- errors ------------------------------------------------------------------------------


async def test_a_missing_topic_is_one_line_and_exit_1(cli: Cli) -> None:
    async def produce_to_a_missing_partition() -> Result:
        await cli.produce("one", "x")
        return await cli("produce", "one", "--partition", "5", stdin=b"y\n")

    *missing, wrong_partition = await concurrently(
        cli("consume", "nope"),
        cli("topic", "describe", "nope"),
        cli("topic", "delete", "nope"),
        produce_to_a_missing_partition(),
    )
    for result in missing:
        assert result.status == 1
        assert result.error_line == "tidelog: error: topic 'nope' does not exist"
        assert result.stdout == b""
    assert wrong_partition.error_line == "tidelog: error: topic 'one' has no partition 5 (it has 1)"


async def test_an_unreachable_broker_is_one_line_naming_it() -> None:
    address = f"127.0.0.1:{closed_port()}"
    commands = [("topic", "list"), ("consume", "t"), ("produce", "t"), ("cluster", "info")]
    results = await concurrently(
        *(run_tidelog(*c, "-b", address, "--timeout-ms", SHORT_TIMEOUT_MS) for c in commands)
    )
    for result in results:
        assert result.status == 1
        assert result.error_line == (
            f"tidelog: error: cannot connect to {address} (connection refused)"
        )
        assert result.stdout == b""


# --- cluster, environment, TLS, help -----------------------------------------------------


async def test_cluster_info_with_brokers_from_the_environment(broker: RunningBroker) -> None:
    result = await run_tidelog(
        "cluster", "info", "--format", "json", env={"TIDELOG_BROKERS": broker.bootstrap}
    )
    assert result.status == 0, result.stderr
    node_id = broker.broker.config.node_id
    document = json.loads(result.stdout)
    quorum = document.pop("quorum")
    assert document == {
        "cluster_id": broker.broker.image.cluster_id,
        "controller_id": node_id,
        "brokers": [
            {"node_id": node_id, "host": broker.host, "port": broker.port, "rack": None,
             "fenced": False}
        ],
    }  # fmt: skip
    (voter,) = quorum["voters"]
    assert (quorum["leader_id"], voter["replica_id"], voter["lag"]) == (node_id, node_id, 0)
    assert quorum["leader_epoch"] >= 1 and quorum["observers"] == []
    assert quorum["high_watermark"] == voter["log_end_offset"] > 0
    text = await run_tidelog("cluster", "info", env={"TIDELOG_BROKERS": broker.bootstrap})
    assert f"  {node_id}  {broker.bootstrap}  (controller)" in text.lines
    quorum_line, voter_line = text.lines[-2:]
    assert quorum_line.startswith(f"Quorum: leader {node_id}, epoch ")
    assert voter_line.startswith(f"  voter {node_id}  log end ") and voter_line.endswith("  lag 0")


async def test_cluster_info_marks_fenced_brokers(cli: Cli, broker: RunningBroker) -> None:
    # Registered, it stays fenced until it heartbeats, which it never does.
    controller = broker.broker.controller
    assert controller is not None
    await controller.commit([RegisterBrokerRecord(7, (Endpoint("PLAINTEXT", "127.0.0.1", 9094),))])
    document = json.loads((await cli.ok("cluster", "info", "--format", "json")).stdout)
    assert [(b["node_id"], b["port"], b["fenced"]) for b in document["brokers"]] == [
        (0, broker.port, False),
        (7, 9094, True),
    ]
    assert [v["replica_id"] for v in document["quorum"]["voters"]] == [0]
    text = (await cli.ok("cluster", "info")).lines
    assert text[2:5] == [
        "Brokers: 2",
        f"  0  {broker.bootstrap}  (controller)",
        "  7  127.0.0.1:9094  fenced",
    ]


async def test_cluster_elect_leaders_reports_each_partition(
    cli: Cli, broker: RunningBroker
) -> None:
    controller = broker.broker.controller
    assert controller is not None
    await controller.commit([RegisterBrokerRecord(7, (Endpoint("PLAINTEXT", "127.0.0.1", 9094),))])
    # Partition 1 prefers broker 7, which is fenced: broker 0 leads it and keeps it.
    await controller.create_topic("pref", assignments=[[0, 7], [7, 0]])
    everything, named, usage, needs_topic = await concurrently(
        cli("cluster", "elect-leaders", "--all-topic-partitions", "--format", "json"),
        cli("cluster", "elect-leaders", "--topic", "pref", "--partition", "0"),
        cli("cluster", "elect-leaders"),
        cli("cluster", "elect-leaders", "--partition", "1"),
    )
    assert everything.status == 1  # an election that could not be held
    (result,) = json.loads(everything.stdout)
    assert (result["topic"], result["partition"], result["elected"]) == ("pref", 1, False)
    assert "PREFERRED_LEADER_NOT_AVAILABLE" in result["error"]
    assert named.status == 0 and named.lines == ["pref-0: no election needed"]
    assert usage.status == needs_topic.status == 2
    assert usage.error_line == "tidelog: error: give either --topic or --all-topic-partitions"


async def test_tls(start_broker: StartBroker, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    listener = ListenerConfig(
        name="SSL", host="127.0.0.1", port=0, tls=TlsConfig(certfile=str(tmp_path / "server.pem"))
    )
    running = await start_broker(local_config(tmp_path / "data", listeners=(listener,)))
    trusted = await run_tidelog(
        "topic", "list", "-b", running.bootstrap, "--tls-ca-file", str(tmp_path / "ca.pem")
    )
    assert trusted.status == 0, trusted.stderr
    untrusted = await run_tidelog(
        "topic", "list", "-b", running.bootstrap, "--tls", "--timeout-ms", SHORT_TIMEOUT_MS
    )
    assert untrusted.status == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.error_line


async def test_help_shows_examples() -> None:
    result = await run_tidelog("consume", "--help")
    assert result.status == 0
    assert "examples:" in result.stdout.decode() and "--offset" in result.stdout.decode()

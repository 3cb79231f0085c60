"""`tidelog dev --nodes N`: a local cluster of N combined broker+controller processes.

Node i (1..N) gets the client port `port + 2(i-1)` and the controller port one above it
(9092/9093, 9094/9095, ... by default), the data dir `<data-dir>/node<i>` and a config file
`<data-dir>/node<i>.toml` that it runs from (`tidelog broker --config`), so the same node
can be started by hand. Every node is a voter of the controller quorum; the cluster id is
derived from the voters. Topics are auto-created, with three replicas (fewer on a smaller
cluster) and `min.insync.replicas` 2 from three nodes on, so that a node can be killed
without losing acknowledged records; new groups rebalance at once, as in `tidelog dev`.

`run_dev_cluster` prints `node <id>  pid <pid>  <host>:<port>` for each node once it is
ready, then `tidelog ready: bootstrap <every node's address>`. A node that exits (say, to a
`kill -9` while trying out failover) is reported on stderr; the others go on. SIGINT or
SIGTERM stops every node (SIGTERM, then SIGKILL for any still running after
`STOP_TIMEOUT_S`) and returns 0, or 1 when a node had failed to start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from tidelog.broker.exit_status import EXIT_FAILED, EXIT_OK

STOP_TIMEOUT_S = 30
READY_PREFIX = b"tidelog ready: "


@dataclass(frozen=True)
class DevNode:
    node_id: int
    host: str
    port: int
    controller_port: int
    data_dir: Path

    @property
    def config_path(self) -> Path:
        return self.data_dir.with_suffix(".toml")


def plan_nodes(count: int, host: str, port: int, data_dir: str) -> list[DevNode]:
    """The nodes of a `count`-node dev cluster (module docstring)."""
    root = Path(data_dir)
    return [
        DevNode(i, host, port + 2 * (i - 1), port + 2 * (i - 1) + 1, root / f"node{i}")
        for i in range(1, count + 1)
    ]


def node_config(node: DevNode, nodes: list[DevNode], partitions: int = 1) -> str:
    """The TOML config file of `node`; auto-created topics get `partitions` partitions."""
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
    return "\n".join(
        [
            f"node_id = {node.node_id}",
            f"data_dir = {_toml_string(str(node.data_dir))}",
            'process_roles = "broker,controller"',
            f'controller_quorum_voters = "{voters}"',
            'controller_listener_names = "CONTROLLER"',
            "auto_create_topics_enable = true",
            f"num_partitions = {partitions}",
            f"default_replication_factor = {min(3, len(nodes))}",
            f"min_insync_replicas = {2 if len(nodes) >= 3 else 1}",
            "group_initial_rebalance_delay_ms = 0",
            "",
            "[[listeners]]",
            'name = "PLAINTEXT"',
            f"host = {_toml_string(node.host)}",
            f"port = {node.port}",
            "",
            "[[listeners]]",
            'name = "CONTROLLER"',
            f"host = {_toml_string(node.host)}",
            f"port = {node.controller_port}",
            "",
        ]
    )


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_dev_cluster(
    count: int, *, host: str, port: int, data_dir: str, partitions: int, log_level: str
) -> int:
    """Run the cluster until a signal; the exit status (module docstring)."""
    nodes = plan_nodes(count, host, port, data_dir)
    for node in nodes:
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(node_config(node, nodes, partitions))
    return trio.run(_supervise, nodes, log_level)


class _Running:
    def __init__(self, node: DevNode, process: trio.Process) -> None:
        self.node = node
        self.process = process
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.settled = trio.Event()
        """Ready or exited, whichever comes first."""


async def _supervise(nodes: list[DevNode], log_level: str) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = [await _start(node, log_level, nursery) for node in nodes]
            nursery.start_soon(_announce, running)
            with trio.CancelScope() as waiting:
                nursery.start_soon(_cancel_once_all_exited, running, waiting)
                async for _ in signals:
                    break
            await _stop_all(running)
            nursery.cancel_scope.cancel()
    stopped_by_signal = not waiting.cancelled_caught
    return EXIT_OK if stopped_by_signal and all(r.ready.is_set() for r in running) else EXIT_FAILED


async def _start(node: DevNode, log_level: str, nursery: trio.Nursery) -> _Running:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "tidelog.broker.cli",
            "--log-level",
            log_level,
            "broker",
            "--config",
            str(node.config_path),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        # A terminal's Ctrl-C reaches the whole process group: the nodes are stopped by
        # this supervisor instead, one signal each.
        start_new_session=True,
    )
    handle = _Running(node, process)
    nursery.start_soon(_watch, handle)
    return handle


async def _watch(handle: _Running) -> None:
    """Set `ready` on the node's ready line; report its exit."""
    process = handle.process
    assert process.stdout is not None
    tail = b""
    while data := await process.stdout.receive_some(4096):
        tail += data
        if not handle.ready.is_set() and READY_PREFIX in tail:
            handle.ready.set()
            handle.settled.set()
        tail = tail[-len(READY_PREFIX) :]
    await process.wait()
    handle.exited.set()
    handle.settled.set()
    if process.returncode != 0:
        print(
            f"tidelog: node {handle.node.node_id} (pid {process.pid}) exited with status "
            f"{process.returncode}",
            file=sys.stderr,
            flush=True,
        )


async def _cancel_once_all_exited(running: list[_Running], scope: trio.CancelScope) -> None:
    for r in running:
        await r.exited.wait()
    scope.cancel()


async def _announce(running: list[_Running]) -> None:
    for r in running:
        await r.settled.wait()
        if not r.ready.is_set():
            return  # its exit was reported; the cluster is not complete
        print(
            f"node {r.node.node_id}  pid {r.process.pid}  {r.node.host}:{r.node.port}",
            flush=True,
        )
    bootstrap = ",".join(f"{r.node.host}:{r.node.port}" for r in running)
    print(f"tidelog ready: bootstrap {bootstrap}", flush=True)


async def _stop_all(running: list[_Running]) -> None:
    for r in running:
        if r.process.returncode is None:
            _signal(r.process, signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT_S):
        for r in running:
            await r.exited.wait()
    for r in running:
        if r.process.returncode is None:
            _signal(r.process, signal.SIGKILL)
            await r.process.wait()


def _signal(process: trio.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.kill(process.pid, signum)

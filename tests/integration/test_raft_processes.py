"""Three Raft nodes as three processes on 127.0.0.1 (tests/integration/raft_node.py): the
leader is killed with SIGKILL mid-stream, a successor commits, the killed node restarts
from its directory and replays the same history. Every process is stopped by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from tests.integration.test_raft_tcp import free_ports

ROOT = Path(__file__).resolve().parents[2]
VOTERS = (1, 2, 3)


class NodeProcess:
    def __init__(self, node_id: int, voters: str, directory: Path) -> None:
        self.node_id = node_id
        self.voters = voters
        self.directory = directory
        self.process: trio.Process | None = None
        self.started: list[trio.Process] = []
        self.lines: list[str] = []
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        self.lines = []
        self.process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "tests.integration.raft_node",
                "--node-id",
                str(self.node_id),
                "--voters",
                self.voters,
                "--dir",
                str(self.directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.started.append(self.process)
        nursery.start_soon(self._read, self.process)

    async def _read(self, process: trio.Process) -> None:
        assert process.stdout is not None
        buffer = b""
        while data := await process.stdout.receive_some(65536):
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            if process is self.process:
                self.lines.extend(line.decode() for line in complete)
                self.changed.set()
                self.changed = trio.Event()

    async def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    @property
    def role(self) -> tuple[str, int] | None:
        roles = [line.split() for line in self.lines if line.startswith("role ")]
        return (roles[-1][1], int(roles[-1][2])) if roles else None

    def applied(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith("applied ")]

    async def wait(self, condition: object) -> None:
        while not condition():  # type: ignore[operator]
            await self.changed.wait()


async def wait_leader(nodes: list[NodeProcess], *, above: int = 0) -> NodeProcess:
    while True:
        for node in nodes:
            role = node.role
            if role is not None and role[0] == "leader" and role[1] > above:
                return node
        await trio.sleep(0.02)


async def test_a_leader_killed_with_sigkill_loses_nothing_committed(tmp_path: Path) -> None:
    ports = await free_ports(len(VOTERS))
    voters = ",".join(f"{i}={p}" for i, p in zip(VOTERS, ports, strict=True))
    nodes = []
    for i in VOTERS:
        (tmp_path / f"node{i}").mkdir()
        nodes.append(NodeProcess(i, voters, tmp_path / f"node{i}" / "__cluster_metadata-0"))
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await node.start(nursery)
                leader = await wait_leader(nodes)
                first = [f"a{i}" for i in range(50)]
                for value in first:
                    await leader.send(f"append {value}")
                for node in nodes:
                    await node.wait(lambda n=node: n.applied() == first)
                epoch = leader.role[1] if leader.role else 0
                # Kill the leader while it is still taking appends.
                for value in ("b0", "b1", "b2"):
                    await leader.send(f"append {value}")
                leader.kill()
                survivors = [n for n in nodes if n is not leader]
                successor = await wait_leader(survivors, above=epoch)
                await successor.send("append c0")
                for node in survivors:
                    await node.wait(lambda n=node: "c0" in n.applied())
                history = survivors[0].applied()
                assert survivors[1].applied() == history
                assert history[: len(first)] == first and history[-1] == "c0"
                assert len(set(history)) == len(history)
                await leader.start(nursery)  # from its directory, after SIGKILL
                await leader.wait(lambda: leader.applied() == history)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                for process in node.started:
                    if process.returncode is None:
                        os.kill(process.pid, signal.SIGKILL)
                    await process.wait()

"""One Raft node as its own process, for the kill -9 tests: a quorum listener on
127.0.0.1, a store in `--dir`, the other voters at `--voters id=port,...`.

stdin lines: `append VALUE` (as the leader; else answered `not-leader`).
stdout lines: `role ROLE EPOCH` on every change, `applied VALUE` per applied data entry,
`appended OFFSET`.
"""

from __future__ import annotations

import argparse
import random
import sys

import trio

from tests.integration.raft_listener import serve_quorum_connection
from tidelog.broker.controller.raft.core import RaftConfig, RaftCore, Ready
from tidelog.broker.controller.raft.driver import RaftDriver, now_ms
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.transport import WireTransport
from tidelog.broker.network import TcpNetwork
from tidelog.broker.runner import run_in_thread
from tidelog.storage.filesystem import OsFileSystem

CLUSTER = "raft-process-test"
CONFIG = RaftConfig(
    fetch_timeout_ms=600,
    election_timeout_ms=300,
    election_backoff_max_ms=300,
    request_timeout_ms=600,
    fetch_max_wait_ms=200,
)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(node_id: int, ports: dict[int, int], directory: str) -> None:
    network = TcpNetwork()
    store = RaftStore.open(OsFileSystem(), directory, now_ms=lambda: 0)
    core = RaftCore(
        node_id, sorted(ports), store.load(), now_ms=now_ms(), rng=random.Random(), config=CONFIG
    )

    def apply(ready: Ready) -> None:
        for entry in ready.committed:
            if entry.control_type is None:
                say(f"applied {entry.value.decode()}")

    transport = WireTransport(
        network,
        {i: ("127.0.0.1", p) for i, p in ports.items() if i != node_id},
        node_id=node_id,
        cluster_id=CLUSTER,
        request_timeout_ms=CONFIG.request_timeout_ms,
    )
    driver = RaftDriver(core, store, transport=transport, run_blocking=run_in_thread, apply=apply)

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_quorum_connection(stream, driver, cluster_id=CLUSTER)

    async def report_roles() -> None:
        last = None
        while True:
            now = (core.role.value, core.epoch)
            if now != last:
                say(f"role {now[0]} {now[1]}")
                last = now
            await trio.sleep(0.01)

    async def read_commands() -> None:
        stdin = trio.lowlevel.FdStream(0)
        buffer = b""
        while data := await stdin.receive_some(4096):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                verb, _, value = line.decode().partition(" ")
                if verb == "append":
                    offset = driver.append([value.encode()])
                    say("not-leader" if offset is None else f"appended {offset}")

    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve_tcp, handler, "127.0.0.1", ports[node_id])
        await nursery.start(transport.serve)
        await nursery.start(driver.serve)
        nursery.start_soon(report_roles)
        await read_commands()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--voters", required=True, help="id=port,...")
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    voters = {int(i): int(p) for i, p in (v.split("=") for v in args.voters.split(","))}
    trio.run(main, args.node_id, voters, args.dir)

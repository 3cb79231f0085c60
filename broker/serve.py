"""Running a broker as a process: real network and disk, until SIGINT or SIGTERM.

Used by the `tidelog dev` and `tidelog broker` commands (broker/cli.py).
"""

from __future__ import annotations

import logging
import random
import signal
import sys

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.raft.store import RaftStoreError
from tidelog.broker.exit_status import EXIT_FAILED, EXIT_OK
from tidelog.broker.lifecycle import LifecycleError
from tidelog.broker.meta_properties import MetadataStoreError
from tidelog.broker.network import TcpNetwork
from tidelog.broker.server import Broker, wall_clock_ms
from tidelog.storage.filesystem import OsFileSystem

log = logging.getLogger("tidelog")


def run_broker(config: BrokerConfig) -> int:
    """Run a broker on the real network and disk until a signal; return the exit status.

    Prints `tidelog ready: bootstrap HOST:PORT` (the first listener's advertised address)
    on stdout once every listener accepts connections.
    """
    status = EXIT_OK
    try:
        status = trio.run(_serve_until_signal, config)
    except* (MetadataStoreError, RaftStoreError, LifecycleError, OSError) as group:
        for exc in _leaves(group):
            print(f"tidelog: cannot start: {exc}", file=sys.stderr)
        status = EXIT_FAILED
    return status


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _serve_until_signal(config: BrokerConfig) -> int:
    broker = Broker(
        config,
        network=TcpNetwork(),
        fs=OsFileSystem(),
        now_ms=wall_clock_ms,
        random=random.Random(),
    )
    status = EXIT_OK
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[None]) -> None:
                await broker.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # the broker is done: stop watching signals

            async def watch_signals() -> None:
                nonlocal status
                received = 0
                async for signum in signals:
                    received += 1
                    if not ready:
                        # Nothing is served yet (the node may be waiting for a quorum
                        # that is not there): stop at once; storage closes on the way out.
                        log.info("%s before ready: stopping", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                    elif received == 1:
                        log.info("%s: shutting down", signal.Signals(signum).name)
                        broker.request_shutdown()
                    else:
                        log.warning("%s again: stopping now", signal.Signals(signum).name)
                        status = EXIT_FAILED
                        nursery.cancel_scope.cancel()

            ready = False
            nursery.start_soon(watch_signals)
            await nursery.start(run)
            ready = True
            endpoint = broker.advertised_endpoints()[0]
            print(f"tidelog ready: bootstrap {endpoint.host}:{endpoint.port}", flush=True)
    return status

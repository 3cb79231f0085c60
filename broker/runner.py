"""The runner for blocking work (fsync, checkpoints, compaction): the broker never calls a
thread pool directly, so a simulation can run the same work inline, in one thread, in a
deterministic order.

    await run_blocking(functools.partial(log.flush))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

T = TypeVar("T")


class BlockingRunner(Protocol):
    async def __call__(self, work: Callable[[], T], /) -> T: ...


async def run_in_thread(work: Callable[[], T], /) -> T:
    """Production: a worker thread, so the event loop keeps serving meanwhile."""
    return await trio.to_thread.run_sync(work)


async def run_inline(work: Callable[[], T], /) -> T:
    """Simulation: on the event loop, after a checkpoint (so it is still a scheduling point)."""
    await trio.lowlevel.checkpoint()
    return work()

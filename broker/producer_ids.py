"""Producer ids for InitProducerId, in blocks from the active controller.

The controller hands out consecutive blocks (AllocateProducerIds, recorded in the metadata
log as ProducerIdsRecord), so no two brokers, and no two starts of one broker, ever hand out
the same id. `allocate()` takes the next id of the current block and fetches a new block
when it is used up; concurrent callers wait for the one fetch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


class ProducerIdAllocator:
    def __init__(self, fetch_block: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        """`fetch_block()` returns a new block: (first id, count)."""
        self._fetch_block = fetch_block
        self._next = 0
        self._end = 0
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                first, count = await self._fetch_block()
                self._next, self._end = first, first + count
            producer_id = self._next
            self._next += 1
            return producer_id

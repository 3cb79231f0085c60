"""A level-free wake-up signal for trio tasks."""

from __future__ import annotations

import trio


class Broadcast:
    """Wakes every task waiting in `wait()` when `notify()` is called.

    Waiters that start waiting after a `notify` wait for the next one, so a waiter re-checks
    its condition, then waits: `while not condition(): await broadcast.wait()`.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    async def wait_until(self, deadline: float) -> bool:
        """Wait for the next `notify` or until the trio clock reaches `deadline`; True if
        notified."""
        event = self._event
        with trio.move_on_at(deadline):
            await event.wait()
        return event.is_set()

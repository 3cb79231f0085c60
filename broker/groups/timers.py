"""Deadlines by key, earliest first: the coordinator's only notion of time passing.

Scheduling a key again replaces its deadline; cancelling forgets it. Superseded heap entries
are dropped lazily when they reach the top, and the heap is rebuilt when they outnumber the
live deadlines, so memory stays proportional to the live keys.
"""

from __future__ import annotations

import heapq

TimerKey = tuple[str, ...]

_COMPACT_SLACK = 64


class Timers:
    """A set of (key, deadline in ms) with the earliest deadline at hand."""

    def __init__(self) -> None:
        self._deadlines: dict[TimerKey, int] = {}
        self._heap: list[tuple[int, int, TimerKey]] = []
        self._sequence = 0

    def schedule(self, key: TimerKey, deadline_ms: int) -> None:
        self._deadlines[key] = deadline_ms
        self._sequence += 1
        heapq.heappush(self._heap, (deadline_ms, self._sequence, key))
        if len(self._heap) > 2 * len(self._deadlines) + _COMPACT_SLACK:
            self._compact()

    def cancel(self, key: TimerKey) -> None:
        self._deadlines.pop(key, None)

    def deadline(self, key: TimerKey) -> int | None:
        return self._deadlines.get(key)

    def next_deadline(self) -> int | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap:
            deadline_ms, _, key = heap[0]
            if self._deadlines.get(key) == deadline_ms:
                return deadline_ms
            heapq.heappop(heap)
        return None

    def pop_due(self, now_ms: int) -> TimerKey | None:
        """Remove and return the earliest key whose deadline is at or before `now_ms`.

        One at a time, because handling one expiry may reschedule or cancel others that are
        due at the same instant.
        """
        if (deadline_ms := self.next_deadline()) is None or deadline_ms > now_ms:
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._deadlines[key]
        return key

    def _compact(self) -> None:
        self._heap = [(d, i, k) for i, (k, d) in enumerate(self._deadlines.items())]
        heapq.heapify(self._heap)
        self._sequence = len(self._heap)

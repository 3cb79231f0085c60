"""The trio driver of one Raft node: carries its core's Ready out, in the core's order.

For each Ready: persist (quorum state, truncation, snapshot, entries + flush) through the
store in the blocking-work runner; then send (requests each in their own task, through the
transport; responses to the inbound requests waiting in `handle`); then hand the Ready to
`apply` (the state machine: install the snapshot, apply the committed entries); then
`advance`. Between Readies it sleeps until the core's next deadline or until something
steps the core (an inbound request, a response, an append).

Inbound requests arrive through `handle(source, request)`, which steps the core and waits
for its answer (a parked fetch waits up to its max wait). Outbound requests go through a
`RaftTransport`: the Kafka-wire one over the controller listener, or an in-process one in
tests; a request that gets no answer yields None and the core's timers take over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol, cast

import trio

from tidelog.broker.controller.raft.core import RaftCore, Ready, Role
from tidelog.broker.controller.raft.messages import Outbound, RaftRequest, RaftResponse
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.wire import api_of, error_response
from tidelog.broker.runner import BlockingRunner
from tidelog.client.protocol.errors import ErrorCode


class RaftTransport(Protocol):
    async def send(self, destination: int, request: RaftRequest) -> RaftResponse | None:
        """The destination's answer, or None when it could not be reached or did not answer
        within the request timeout."""
        ...


class _Waiter:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: RaftResponse | None = None


def now_ms() -> int:
    return int(trio.current_time() * 1000)


class RaftDriver:
    def __init__(
        self,
        core: RaftCore,
        store: RaftStore,
        *,
        transport: RaftTransport,
        run_blocking: BlockingRunner,
        apply: Callable[[Ready], None],
    ) -> None:
        self.core = core
        self.store = store
        self._transport = transport
        self._run_blocking = run_blocking
        self._apply = apply
        self._wakeup = trio.Event()
        self._waiters: dict[int, tuple[RaftRequest, _Waiter]] = {}
        self._nursery: trio.Nursery | None = None
        self._committed = trio.Event()
        self._applied_to = core.log.start_offset
        self._sending = 0
        """Requests dispatched and not answered yet."""
        self._sends_done = trio.Event()
        self._carried_out = trio.Event()

    def wake(self) -> None:
        """Something stepped the core: carry out its Ready now."""
        self._wakeup.set()

    def append(self, values: list[bytes]) -> int | None:
        """Append as the leader (see RaftCore.append); the driver persists and sends."""
        offset = self.core.append(values)
        self.wake()
        return offset

    async def resign(self, timeout_ms: int) -> None:
        """Step down if this node leads (a clean shutdown), so that the others elect a
        successor at once instead of after their fetch timeout; returns once the
        EndQuorumEpoch requests are answered, or after `timeout_ms`."""
        if self.core.role is not Role.LEADER:
            return
        self.core.resign()
        self.wake()
        with trio.move_on_after(timeout_ms / 1000):
            await self._carried_out.wait()
            while self._sending:
                await self._sends_done.wait()

    async def wait_applied(self, offset: int) -> None:
        """Wait until the entry at `offset` has been handed to `apply`."""
        while self._applied_to <= offset:
            await self._committed.wait()

    async def handle(self, source: int, request: RaftRequest) -> RaftResponse:
        """Step the core with an inbound request and wait for its answer."""
        waiter = _Waiter()
        self._waiters[id(request)] = (request, waiter)
        try:
            self.core.receive_request(source, request, now_ms())
            self.wake()
            timeout_ms = self.core.config.request_timeout_ms + self.core.config.fetch_max_wait_ms
            with trio.move_on_after(timeout_ms / 1000):
                await waiter.done.wait()
        finally:
            del self._waiters[id(request)]
        if waiter.response is None:
            return error_response(api_of(request).key, ErrorCode.REQUEST_TIMED_OUT)
        return waiter.response

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._carry_out_ready()
                delay_ms = self.core.next_deadline_ms() - now_ms()
                if delay_ms > 0 and not self._wakeup.is_set():
                    with trio.move_on_after(delay_ms / 1000):
                        await self._wakeup.wait()
                else:
                    await trio.lowlevel.checkpoint()  # never starve the other tasks
                self._wakeup = trio.Event()
                self.core.tick(now_ms())

    async def _carry_out_ready(self) -> None:
        while True:
            ready = self.core.ready()
            if ready.empty():
                self._carried_out.set()
                self._carried_out = trio.Event()
                return
            if ready.persists():
                await self._run_blocking(functools.partial(self._persist, ready))
            for out in ready.messages:
                self._dispatch(out)
            self._apply(ready)
            if ready.committed or ready.install_snapshot is not None:
                if ready.committed:
                    self._applied_to = ready.committed[-1].offset + 1
                if ready.install_snapshot is not None:
                    end = ready.install_snapshot.snapshot_id.end_offset
                    self._applied_to = max(self._applied_to, end)
                self._committed.set()
                self._committed = trio.Event()
            self.core.advance(ready)

    def _persist(self, ready: Ready) -> None:
        store = self.store
        if ready.quorum_state is not None:
            store.write_quorum_state(ready.quorum_state)
        if ready.truncate_to is not None:
            store.truncate_to(ready.truncate_to)
        if ready.snapshot is not None:
            store.write_snapshot(ready.snapshot)
        if ready.entries:
            store.append(ready.entries)
            store.flush()

    def _dispatch(self, out: Outbound) -> None:
        if out.request is not None:
            waiting = self._waiters.get(id(out.request))
            if waiting is not None and waiting[0] is out.request:
                waiting[1].response = cast(RaftResponse, out.message)
                waiting[1].done.set()
            return
        assert self._nursery is not None
        self._sending += 1
        self._nursery.start_soon(self._send, out.destination, cast(RaftRequest, out.message))

    async def _send(self, destination: int, request: RaftRequest) -> None:
        try:
            response = await self._transport.send(destination, request)
        finally:
            self._sending -= 1
            if not self._sending:
                self._sends_done.set()
                self._sends_done = trio.Event()
        if response is None:
            self.core.request_failed(destination, request, now_ms())
        else:
            self.core.receive_response(destination, request, response, now_ms())
        self.wake()

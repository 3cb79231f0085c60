"""The admin client's plumbing: lifecycle, deadlines and the retry loop every call runs
in. Use `client.admin.Admin`; its calls are grouped in mixins on top of `AdminBase`
(`client.admin_groups.GroupAdmin` for consumer groups).

Inside an attempt, raise `Retry(error)` to refresh metadata, back off and try again, or
`GiveUp(error)` to fail with `error` even if it is retriable in general.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, TypeVar

import trio

from tidelog.client.cluster import Cluster, enter_owned_nursery, exit_owned_nursery
from tidelog.client.config import AdminConfig
from tidelog.client.connection import BrokerConnection, Connector, backoff_s
from tidelog.client.errors import (
    ClientClosedError,
    KafkaError,
    KafkaProtocolError,
    KafkaTimeoutError,
    error_for_code,
)
from tidelog.client.metadata import ClusterMetadata
from tidelog.client.protocol.errors import ErrorCode

T = TypeVar("T")


class Retry(Exception):
    """Raised inside an attempt: refresh metadata, back off, and try again."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


class GiveUp(Exception):
    """Raised inside an attempt: give up with `error`, even if it is retriable in general."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


class AdminBase:
    """The cluster connection and the plumbing of `Admin` (see `Admin` for the arguments)."""

    def __init__(
        self,
        *,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        **config: Any,
    ) -> None:
        self.config = AdminConfig(**config)
        self._rng = rng or random.Random()
        self._cluster = Cluster(
            self.config, connector=connector, allow_auto_topic_creation=False, rng=self._rng
        )
        self._nursery: trio.Nursery | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._exit_stack is not None or self._closed:
            raise ClientClosedError("an Admin can be entered once")

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(self._cluster.run)

        self._exit_stack, self._nursery = await enter_owned_nursery(start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._shutdown(exc)

    async def aclose(self) -> None:
        await self._shutdown(None)

    async def _shutdown(self, exc: BaseException | None) -> bool:
        stack, self._exit_stack = self._exit_stack, None
        self._closed = True
        if stack is None:
            return False
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return await exit_owned_nursery(stack, exc)
        finally:
            self._nursery = None

    # --- plumbing ------------------------------------------------------------------------

    def _deadline(self, timeout_ms: int | None) -> float:
        timeout = self.config.default_api_timeout_ms if timeout_ms is None else timeout_ms
        return trio.current_time() + timeout / 1000

    async def _retrying(
        self, what: str, deadline: float, attempt_once: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `attempt_once` until it returns, retrying `Retry` and retriable errors with
        backoff (and a metadata refresh) until `deadline`."""
        if self._closed or self._nursery is None:
            raise ClientClosedError("the admin client is closed" if self._closed else "not started")
        attempt = 0
        error: KafkaError | None = None
        while True:
            try:
                with trio.fail_at(deadline):
                    return await attempt_once()
            except trio.TooSlowError:
                # Name the error that made the earlier attempts fail, if there was one.
                detail = "" if error is None else f" (last error: {error})"
                raise KafkaTimeoutError(f"{what} did not finish in time{detail}") from error
            except GiveUp as final:
                raise final.error from None
            except Retry as retry:
                error = retry.error
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                error = exc
            attempt += 1
            self._cluster.request_update()
            delay = backoff_s(
                attempt,
                self.config.retry_backoff_ms,
                self.config.retry_backoff_max_ms,
                self._rng.uniform(-1, 1),
            )
            if trio.current_time() + delay >= deadline:
                raise KafkaTimeoutError(f"{what} did not succeed in time: {error}") from error
            await trio.sleep(delay)

    def _broker_timeout_ms(self, deadline: float) -> int:
        return max(int((deadline - trio.current_time()) * 1000), 1)

    async def _metadata(self) -> ClusterMetadata:
        """Fresh metadata (brokers, controller), waiting for the first refresh."""
        if self._cluster.metadata.version == 0:
            await self._cluster.refresh()
        return self._cluster.metadata

    async def _controller(self) -> BrokerConnection:
        metadata = await self._metadata()
        if metadata.controller_id < 0:
            raise Retry(error_for_code(ErrorCode.NOT_CONTROLLER, "no controller known"))
        return await self._cluster.connection(metadata.controller_id)

    @staticmethod
    def _raise_first(errors: list[KafkaError]) -> None:
        if errors:
            raise errors[0]

    @staticmethod
    def _entity_error(code: int, message: str | None, entity: str) -> KafkaError | None:
        if code == ErrorCode.NONE:
            return None
        return error_for_code(code, f"{entity}: {message}" if message else entity)


def unanswered(api: str, entities: Iterable[object]) -> list[KafkaError]:
    """Errors for entities that a response should have answered and did not."""
    return [KafkaProtocolError(f"the {api} response says nothing of {e}") for e in entities]

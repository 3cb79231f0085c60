"""What request handlers may use of their broker: a narrow view, not the broker object.

`BrokerContext` is a Protocol the `Broker` satisfies; handlers (and the connections that
build their `RequestContext`) depend on it alone, so nothing imports `broker.server` but the
composition code. It extends what the group service uses (`GroupServiceHost`: config, the
metadata image, topics, replicas, randomness and the wall clock).
"""

from __future__ import annotations

from typing import Protocol

from tidelog.broker.groups.service import GroupService, GroupServiceHost
from tidelog.broker.producer_ids import ProducerIdAllocator
from tidelog.broker.router import Router
from tidelog.broker.runner import BlockingRunner


class BrokerContext(GroupServiceHost, Protocol):
    @property
    def groups(self) -> GroupService: ...

    @property
    def producer_ids(self) -> ProducerIdAllocator: ...

    @property
    def router(self) -> Router:
        """The APIs served (ApiVersions lists them)."""
        ...

    @property
    def run_blocking(self) -> BlockingRunner:
        """Runs blocking work (fsync) off the event loop."""
        ...

    @property
    def connection_count(self) -> int: ...

"""Finding a consumer group's coordinator and keeping connections to it.

FindCoordinator (key type 0: a group) goes to any broker; v4+ batches keys
(`coordinator_keys`), older versions name one key. The coordinator then gets two
connections of its own, separate from the consumer's fetch connections, by "lane":

- "join": JoinGroup and SyncGroup, which the coordinator parks for up to the rebalance
  timeout; a broker answers one connection's requests in order, so nothing else may wait
  behind them;
- "coordinator": Heartbeat, OffsetCommit, OffsetFetch, LeaveGroup.

Whether the coordinator is known is the membership's state (`GroupMembership`
`coordinator_known`, `coordinator_epoch`); this class carries out the lookups it asks for and
drops the connections when the coordinator is looked up again.
"""

from __future__ import annotations

import logging
from typing import Literal

import trio

from tidelog.client.broadcast import Broadcast
from tidelog.client.cluster import Cluster
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    error_for_code,
)
from tidelog.client.group_membership import GroupMembership
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.groups import FIND_COORDINATOR

log = logging.getLogger(__name__)

GROUP_KEY_TYPE = 0
FIRST_BATCHED_FIND_COORDINATOR_VERSION = 4

Lane = Literal["join", "coordinator"]


class CoordinatorConnections:
    """The coordinator of `group_id` and this consumer's connections to it."""

    def __init__(
        self, cluster: Cluster, group_id: str, membership: GroupMembership, changed: Broadcast
    ) -> None:
        self.group_id = group_id
        self._cluster = cluster
        self._membership = membership
        self._changed = changed
        """Notified when the coordinator is found or lost."""
        self._coordinator: tuple[int, str, int] | None = None
        """(node id, host, port) of the coordinator found last."""
        self._connections: dict[Lane, BrokerConnection] = {}
        self._connect_locks: dict[Lane, trio.Lock] = {
            "join": trio.Lock(),
            "coordinator": trio.Lock(),
        }
        self._lookup_lock = trio.Lock()

    @property
    def known(self) -> bool:
        return self._membership.coordinator_known and self._coordinator is not None

    async def ensure(self, deadline: float) -> int:
        """Find the coordinator unless it is known; returns the membership's
        `coordinator_epoch` for it. Lookups are spaced by the membership's backoff; raises
        `KafkaTimeoutError` when the next would start after `deadline`, and a lookup error
        that retrying cannot cure at once."""
        m = self._membership
        while not self.known:
            async with self._lookup_lock:
                if self.known:
                    break
                # Requests in flight to the old coordinator fail as retriable: their
                # senders send them again.
                self.drop(KafkaConnectionError("looking up the group coordinator again"))
                retry_at = m.lookup_retry_at
                if retry_at > deadline:
                    raise KafkaTimeoutError(f"the coordinator of group {self.group_id!r} not found")
                await trio.sleep_until(retry_at)
                try:
                    self._coordinator = await self._find()
                except KafkaError as exc:
                    log.info("group %s: coordinator lookup failed: %s", self.group_id, exc)
                    m.coordinator_lookup_failed(trio.current_time(), exc)
                    self._changed.notify()
                    if not exc.retriable:
                        raise
                    continue
                m.coordinator_found()
                log.info("group %s: coordinator is broker %d", self.group_id, self._coordinator[0])
                self._changed.notify()
        return m.coordinator_epoch

    async def _find(self) -> tuple[int, str, int]:
        connection = await self._cluster.any_connection()
        version = connection.api_version(FIND_COORDINATOR.key)
        body = {
            "key": self.group_id,
            "key_type": GROUP_KEY_TYPE,
            "coordinator_keys": [self.group_id],
        }
        response = await connection.request(FIND_COORDINATOR.key, body, version=version)
        if version >= FIRST_BATCHED_FIND_COORDINATOR_VERSION:
            entry = next((c for c in response["coordinators"] if c["key"] == self.group_id), None)
            if entry is None:
                raise KafkaConnectionError("FindCoordinator answered without our group")
        else:
            entry = response
        code = entry["error_code"]
        if code != ErrorCode.NONE:
            raise error_for_code(code, f"FindCoordinator for group {self.group_id!r}")
        return entry["node_id"], entry["host"], entry["port"]

    async def connection(self, lane: Lane) -> BrokerConnection:
        """The coordinator's connection for `lane`, made if needed; raises
        `KafkaConnectionError` when the coordinator is unknown or unreachable."""
        connection = self._connections.get(lane)
        if connection is not None and not connection.closed:
            return connection
        async with self._connect_locks[lane]:
            connection = self._connections.get(lane)
            if connection is not None and not connection.closed:
                return connection
            coordinator = self._coordinator
            if coordinator is None or not self._membership.coordinator_known:
                raise KafkaConnectionError(f"the coordinator of group {self.group_id!r} is unknown")
            connection = await self._cluster.open_dedicated_connection(*coordinator)
            if coordinator != self._coordinator:
                connection.close()
                raise KafkaConnectionError("the group coordinator changed while connecting")
            self._connections[lane] = connection
            return connection

    def failed(self, reason: str, epoch: int) -> None:
        """A request to the coordinator of `epoch` failed in a way that says it is gone."""
        self._membership.coordinator_lost(trio.current_time(), reason, epoch)
        self._changed.notify()

    def drop(self, error: KafkaError) -> None:
        """Forget the coordinator and close its connections; requests in flight on them
        fail with `error`."""
        self._coordinator = None
        for connection in self._connections.values():
            connection.close(error)
        self._connections.clear()

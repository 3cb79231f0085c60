"""Consumer-group administration: the `Admin` calls on groups (`GroupAdmin`), what they
return, and the request bodies and response readings of FindCoordinator, ListGroups,
DescribeGroups and DeleteGroups across versions (pure functions, tested without a broker).

Each group call goes to the group's coordinator, found with FindCoordinator (batched at v4+);
`list_groups` asks every broker, since each lists only the groups it coordinates. Group
states are Kafka's names: "Empty" (no members; offsets may still be stored),
"PreparingRebalance", "CompletingRebalance", "Stable" and "Dead".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tidelog.client.admin_base import AdminBase, GiveUp, Retry
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import (
    IncompatibleBrokerError,
    KafkaError,
    KafkaProtocolError,
    error_for_code,
)
from tidelog.client.group_offsets import (
    OFFSET_COMMIT_MAX_VERSION,
    OFFSET_FETCH_MAX_VERSION,
    offset_commit_errors,
    offset_commit_request,
    offset_fetch_request,
    offset_fetch_results,
)
from tidelog.client.metadata import BrokerInfo
from tidelog.client.protocol.consumer_protocol import (
    CONSUMER_PROTOCOL_TYPE,
    decode_assignment,
    flatten_partitions,
)
from tidelog.client.protocol.errors import CorruptMessageError, ErrorCode
from tidelog.client.protocol.messages.groups import (
    DELETE_GROUPS,
    DESCRIBE_GROUPS,
    FIND_COORDINATOR,
    LIST_GROUPS,
    OFFSET_COMMIT,
    OFFSET_FETCH,
)
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import OffsetAndMetadata, TopicPartition

T = TypeVar("T")

GROUP_KEY_TYPE = 0
"""FindCoordinator's key type for consumer groups (1 is transactional ids)."""
FIRST_BATCHED_FIND_COORDINATOR_VERSION = 4
FIRST_LIST_GROUPS_STATES_VERSION = 4
FIRST_NULL_OFFSET_FETCH_TOPICS_VERSION = 2
"""OffsetFetch v2+ reads null topics as "every partition the group has an offset for"."""

EMPTY = "Empty"
STABLE = "Stable"
DEAD = "Dead"

ACTIVE_GROUP_CODES = frozenset(
    {ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION}
)
"""What a coordinator answers a commit without a member id (generation -1) while the group
has members: such a commit is accepted only while the group is Empty."""


@dataclass(frozen=True, slots=True)
class GroupListing:
    """One group as ListGroups names it. `protocol_type` is "consumer" for consumer groups
    and "" for groups that only store offsets (clients that assign partitions themselves);
    `state` is None when the broker is too old to say (ListGroups before v4)."""

    group_id: str
    protocol_type: str
    state: str | None


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """One member of a group. `assignment` is the member's partitions, sorted, decoded for
    consumer groups while the group is Stable (empty otherwise, and for an assignment that
    does not parse); `raw_assignment` is the bytes as the coordinator holds them."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: tuple[TopicPartition, ...]
    raw_assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A group as its coordinator describes it. `protocol` is the chosen assignor of a
    Stable consumer group ("range", "roundrobin", ...), else ""."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberDescription, ...]
    coordinator: BrokerInfo

    @property
    def is_active(self) -> bool:
        """Whether the group has members (its offsets can then only be committed by them)."""
        return bool(self.members) or self.state not in (EMPTY, DEAD)

    def owner_of(self, tp: TopicPartition) -> MemberDescription | None:
        """The member the partition is assigned to, if any."""
        return next((m for m in self.members if tp in m.assignment), None)


# --- FindCoordinator ---------------------------------------------------------------------


def find_coordinator_request(group_ids: Sequence[str]) -> Message:
    """A FindCoordinator body for `group_ids` (before v4, only the first is asked for)."""
    return {"key": group_ids[0], "key_type": GROUP_KEY_TYPE, "coordinator_keys": list(group_ids)}


def found_coordinators(
    response: Message, version: int, group_ids: Sequence[str]
) -> dict[str, BrokerInfo | KafkaError]:
    """Each asked group's coordinator, or the error FindCoordinator gave for it."""
    if version < FIRST_BATCHED_FIND_COORDINATOR_VERSION:
        entries = {group_ids[0]: response}
    else:
        entries = {c["key"]: c for c in response["coordinators"]}
    asked = group_ids if version >= FIRST_BATCHED_FIND_COORDINATOR_VERSION else group_ids[:1]
    out: dict[str, BrokerInfo | KafkaError] = {}
    for group_id in asked:
        entry = entries.get(group_id)
        if entry is None:
            out[group_id] = KafkaProtocolError(
                f"the FindCoordinator response says nothing of group {group_id!r}"
            )
        elif entry["error_code"] != ErrorCode.NONE:
            message = entry.get("error_message")
            detail = f"coordinator of group {group_id!r}" + (f": {message}" if message else "")
            out[group_id] = error_for_code(entry["error_code"], detail)
        else:
            out[group_id] = BrokerInfo(entry["node_id"], entry["host"], entry["port"])
    return out


# --- ListGroups --------------------------------------------------------------------------


def list_groups_request(states: Sequence[str] | None) -> Message:
    return {"states_filter": list(states or ()), "types_filter": []}


def listed_groups(response: Message, version: int) -> list[GroupListing]:
    return [
        GroupListing(
            g["group_id"],
            g["protocol_type"],
            g["group_state"] if version >= FIRST_LIST_GROUPS_STATES_VERSION else None,
        )
        for g in response["groups"]
    ]


# --- DescribeGroups ----------------------------------------------------------------------


def describe_groups_request(group_ids: Sequence[str]) -> Message:
    return {"groups": list(group_ids), "include_authorized_operations": False}


def described_groups(
    response: Message, group_ids: Sequence[str], coordinator: BrokerInfo
) -> dict[str, GroupDescription | KafkaError]:
    """Each asked group's description, or its error. A group the coordinator does not know
    is GROUP_ID_NOT_FOUND at every version (before v6 brokers describe it as Dead)."""
    entries = {g["group_id"]: g for g in response["groups"]}
    out: dict[str, GroupDescription | KafkaError] = {}
    for group_id in group_ids:
        entry = entries.get(group_id)
        if entry is None:
            out[group_id] = KafkaProtocolError(
                f"the DescribeGroups response says nothing of group {group_id!r}"
            )
            continue
        code = entry["error_code"]
        if code == ErrorCode.NONE and entry["group_state"] == DEAD:
            code = ErrorCode.GROUP_ID_NOT_FOUND
        if code != ErrorCode.NONE:
            out[group_id] = error_for_code(code, f"group {group_id!r}")
            continue
        out[group_id] = GroupDescription(
            group_id=group_id,
            state=entry["group_state"],
            protocol_type=entry["protocol_type"],
            protocol=entry["protocol_data"],
            members=tuple(_member(m, entry["protocol_type"]) for m in entry["members"]),
            coordinator=coordinator,
        )
    return out


def _member(entry: Message, protocol_type: str) -> MemberDescription:
    raw: bytes = bytes(entry["member_assignment"])
    assignment: tuple[TopicPartition, ...] = ()
    if protocol_type == CONSUMER_PROTOCOL_TYPE:
        try:
            decoded = decode_assignment(raw)
        except CorruptMessageError:
            pass  # the group leader's encoding, not ours to fail on: keep the raw bytes
        else:
            assignment = tuple(
                sorted(
                    TopicPartition(topic, partition)
                    for topic, partition in flatten_partitions(decoded.assigned_partitions)
                )
            )
    return MemberDescription(
        member_id=entry["member_id"],
        group_instance_id=entry.get("group_instance_id"),
        client_id=entry["client_id"],
        client_host=entry["client_host"],
        assignment=assignment,
        raw_assignment=raw,
    )


# --- DeleteGroups ------------------------------------------------------------------------


def delete_groups_request(group_ids: Sequence[str]) -> Message:
    return {"groups_names": list(group_ids)}


def deleted_groups(response: Message, group_ids: Sequence[str]) -> dict[str, KafkaError | None]:
    """Each asked group's outcome: None when deleted, else its error."""
    codes = {r["group_id"]: r["error_code"] for r in response["results"]}
    out: dict[str, KafkaError | None] = {}
    for group_id in group_ids:
        code = codes.get(group_id)
        if code is None:
            out[group_id] = KafkaProtocolError(
                f"the DeleteGroups response says nothing of group {group_id!r}"
            )
        elif code == ErrorCode.NON_EMPTY_GROUP:
            out[group_id] = error_for_code(
                code, f"group {group_id!r} has members; stop its consumers before deleting it"
            )
        else:
            out[group_id] = (
                None if code == ErrorCode.NONE else error_for_code(code, f"group {group_id!r}")
            )
    return out


def offset_fetch_all_request(group_id: str) -> Message:
    """An OffsetFetch body (v2+) for every partition the group has an offset for."""
    return {
        "group_id": group_id,
        "topics": None,
        "groups": [{"group_id": group_id, "member_id": None, "member_epoch": -1, "topics": None}],
        "require_stable": False,
    }


# --- the Admin calls ---------------------------------------------------------------------


class GroupAdmin(AdminBase):
    """`Admin`'s consumer-group calls."""

    async def _find_coordinators(self, group_ids: Sequence[str]) -> dict[str, BrokerInfo]:
        """Each group's coordinator (FindCoordinator, to any broker). Raises `Retry` while
        some coordinator is not available yet."""
        connection = await self._cluster.any_connection()
        version = connection.api_version(FIND_COORDINATOR.key)
        batches = (
            [list(group_ids)]
            if version >= FIRST_BATCHED_FIND_COORDINATOR_VERSION
            else [[group_id] for group_id in group_ids]
        )
        found: dict[str, BrokerInfo] = {}
        for batch in batches:
            response = await connection.request(
                FIND_COORDINATOR.key, find_coordinator_request(batch), version=version
            )
            for group_id, result in found_coordinators(response, version, batch).items():
                if isinstance(result, KafkaError):
                    raise Retry(result) if result.retriable else GiveUp(result)
                found[group_id] = result
        return found

    async def _coordinator_connection(self, coordinator: BrokerInfo) -> BrokerConnection:
        await self._metadata()
        return await self._cluster.connection(coordinator.node_id)

    async def _each_coordinator(
        self,
        what: str,
        group_ids: Iterable[str],
        request: Callable[[BrokerConnection, BrokerInfo, list[str]], Awaitable[Mapping[str, T]]],
    ) -> dict[str, T | KafkaError]:
        """Run `request` once per coordinator with the groups it coordinates, until every
        group has an outcome: its result, or a non-retriable error (retriable errors and
        moved coordinators are retried until the deadline). Results in `group_ids` order."""
        wanted = list(dict.fromkeys(group_ids))
        outcomes: dict[str, T | KafkaError] = {}

        async def attempt() -> None:
            pending = [group_id for group_id in wanted if group_id not in outcomes]
            if not pending:
                return
            by_node: dict[int, tuple[BrokerInfo, list[str]]] = {}
            for group_id, coordinator in (await self._find_coordinators(pending)).items():
                by_node.setdefault(coordinator.node_id, (coordinator, []))[1].append(group_id)
            retry: KafkaError | None = None
            for coordinator, ids in by_node.values():
                connection = await self._coordinator_connection(coordinator)
                for group_id, outcome in (await request(connection, coordinator, ids)).items():
                    if isinstance(outcome, KafkaError) and outcome.retriable:
                        retry = outcome
                    else:
                        outcomes[group_id] = outcome
            if retry is not None:
                raise Retry(retry)

        if wanted:
            await self._retrying(what, self._deadline(None), attempt)
        return {group_id: outcomes[group_id] for group_id in wanted}

    async def list_groups(self, *, states: Iterable[str] | None = None) -> list[GroupListing]:
        """Every group of the cluster (ListGroups, to each broker: a broker lists the groups
        it coordinates), sorted by id. `states` keeps only groups in these states
        ("Stable", "Empty", ...; needs ListGroups v4+)."""
        wanted_states = None if states is None else list(states)
        listed: dict[int, list[GroupListing]] = {}

        async def attempt() -> None:
            retry: KafkaError | None = None
            for node_id in sorted((await self._metadata()).brokers):
                if node_id in listed:
                    continue
                connection = await self._cluster.connection(node_id)
                version = connection.api_version(LIST_GROUPS.key)
                if wanted_states and version < FIRST_LIST_GROUPS_STATES_VERSION:
                    raise GiveUp(
                        IncompatibleBrokerError(
                            f"{connection.describe()} cannot filter groups by state "
                            f"(ListGroups v{version})"
                        )
                    )
                response = await connection.request(
                    LIST_GROUPS.key, list_groups_request(wanted_states), version=version
                )
                code = response["error_code"]
                if code != ErrorCode.NONE:
                    error = error_for_code(code, f"ListGroups on {connection.describe()}")
                    if not error.retriable:
                        raise GiveUp(error)
                    retry = error
                    continue
                listed[node_id] = listed_groups(response, version)
            if retry is not None:
                raise Retry(retry)

        await self._retrying("ListGroups", self._deadline(None), attempt)
        return sorted(
            (listing for listings in listed.values() for listing in listings),
            key=lambda listing: listing.group_id,
        )

    async def describe_groups(self, group_ids: Iterable[str]) -> dict[str, GroupDescription]:
        """State, assignor, members (with their decoded assignments) and coordinator of each
        group (DescribeGroups, to each group's coordinator). Raises `GroupIdNotFoundError`
        for a group that does not exist."""

        async def request(
            connection: BrokerConnection, coordinator: BrokerInfo, ids: list[str]
        ) -> dict[str, GroupDescription | KafkaError]:
            response = await connection.request(DESCRIBE_GROUPS.key, describe_groups_request(ids))
            return described_groups(response, ids, coordinator)

        outcomes = await self._each_coordinator("DescribeGroups", group_ids, request)
        self._raise_first([o for o in outcomes.values() if isinstance(o, KafkaError)])
        return {g: o for g, o in outcomes.items() if isinstance(o, GroupDescription)}

    async def delete_groups(self, group_ids: Iterable[str]) -> None:
        """Delete groups and their committed offsets (DeleteGroups, to each group's
        coordinator). Only groups without members can be deleted: others fail with
        `NonEmptyGroupError`, unknown ones with `GroupIdNotFoundError`."""

        async def request(
            connection: BrokerConnection, coordinator: BrokerInfo, ids: list[str]
        ) -> dict[str, KafkaError | None]:
            response = await connection.request(DELETE_GROUPS.key, delete_groups_request(ids))
            return deleted_groups(response, ids)

        outcomes = await self._each_coordinator("DeleteGroups", group_ids, request)
        self._raise_first([o for o in outcomes.values() if isinstance(o, KafkaError)])

    async def list_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (OffsetFetch, to its coordinator): of `partitions`,
        or of every partition it has one for. Partitions without a committed offset are
        left out; an unknown group has none."""
        wanted = None if partitions is None else sorted({TopicPartition(*tp) for tp in partitions})

        async def attempt() -> dict[TopicPartition, OffsetAndMetadata]:
            coordinator = (await self._find_coordinators([group_id]))[group_id]
            connection = await self._coordinator_connection(coordinator)
            version = connection.api_version(OFFSET_FETCH.key, max_version=OFFSET_FETCH_MAX_VERSION)
            if wanted is None and version < FIRST_NULL_OFFSET_FETCH_TOPICS_VERSION:
                raise GiveUp(
                    IncompatibleBrokerError(
                        f"{connection.describe()} cannot list all of a group's offsets "
                        f"(OffsetFetch v{version}); name the partitions"
                    )
                )
            body = (
                offset_fetch_all_request(group_id)
                if wanted is None
                else offset_fetch_request(group_id, wanted, require_stable=False)
            )
            response = await connection.request(OFFSET_FETCH.key, body, version=version)
            code, results = offset_fetch_results(response, group_id)
            if code != ErrorCode.NONE:
                error = error_for_code(code, f"OffsetFetch for group {group_id!r}")
                raise Retry(error) if error.retriable else GiveUp(error)
            out: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, result in sorted(results.items()):
                if isinstance(result, ErrorCode):
                    error = error_for_code(result, f"OffsetFetch for group {group_id!r}, {tp}")
                    raise Retry(error) if error.retriable else GiveUp(error)
                if result is not None:
                    out[tp] = result
            return out

        return await self._retrying("OffsetFetch", self._deadline(None), attempt)

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Set the group's committed offsets (OffsetCommit outside any generation, to its
        coordinator); creates the group if it does not exist. Only a group without members
        accepts this: an active group fails with `UnknownMemberIdError` (or
        `RebalanceInProgressError`) saying that the group is active."""
        pending = {TopicPartition(*tp): committed for tp, committed in offsets.items()}
        for tp, committed in pending.items():
            if committed.offset < 0:
                raise ValueError(f"{tp}: a committed offset cannot be negative")
        errors: list[KafkaError] = []

        async def attempt() -> None:
            coordinator = (await self._find_coordinators([group_id]))[group_id]
            connection = await self._coordinator_connection(coordinator)
            body = offset_commit_request(group_id, -1, "", None, pending)
            response = await connection.request(
                OFFSET_COMMIT.key, body, max_version=OFFSET_COMMIT_MAX_VERSION
            )
            retry: KafkaError | None = None
            for tp, code in offset_commit_errors(response, pending).items():
                if code in ACTIVE_GROUP_CODES:
                    raise GiveUp(
                        error_for_code(
                            code,
                            f"group {group_id!r} is active: its offsets can be altered only "
                            "while it has no members (stop its consumers first)",
                        )
                    )
                if code == ErrorCode.NONE:
                    del pending[tp]
                    continue
                error = error_for_code(code, f"OffsetCommit for group {group_id!r}, {tp}")
                if error.retriable:
                    retry = error
                else:
                    errors.append(error)
                    del pending[tp]
            if retry is not None:
                raise Retry(retry)

        if pending:
            await self._retrying("OffsetCommit", self._deadline(None), attempt)
        self._raise_first(errors)

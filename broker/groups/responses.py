"""Response bodies of JoinGroup and SyncGroup, shaped per API version."""

from __future__ import annotations

from tidelog.broker.groups.group import Group, Member
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

FIRST_NULLABLE_PROTOCOL_NAME_VERSION = 7


def join_response(
    version: int,
    *,
    error: ErrorCode = ErrorCode.NONE,
    member_id: str = "",
    generation_id: int = -1,
    protocol_type: str | None = None,
    protocol_name: str | None = None,
    leader_id: str | None = None,
    members: list[Message] | None = None,
) -> Message:
    """A JoinGroup response body; ProtocolName is "" rather than null before v7."""
    if protocol_name is None and version < FIRST_NULLABLE_PROTOCOL_NAME_VERSION:
        protocol_name = ""
    return {
        "throttle_time_ms": 0,
        "error_code": int(error),
        "generation_id": generation_id,
        "protocol_type": protocol_type,
        "protocol_name": protocol_name,
        "leader": leader_id or "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": members or [],
    }


def generation_response(
    group: Group, member: Member, version: int, *, with_members: bool
) -> Message:
    """The current generation as JoinGroup tells it to `member`; the leader's answer carries
    every member's metadata for the chosen protocol (`with_members`)."""
    members = []
    if with_members:
        assert group.protocol_name is not None
        protocol = group.protocol_name
        members = [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata(protocol),
            }
            for m in group.members.values()
        ]
    return join_response(
        version,
        member_id=member.member_id,
        generation_id=group.generation_id,
        protocol_type=group.protocol_type,
        protocol_name=group.protocol_name,
        leader_id=group.leader_id,
        members=members,
    )


def sync_response(
    assignment: bytes = b"",
    protocol_type: str | None = None,
    protocol_name: str | None = None,
    error: ErrorCode = ErrorCode.NONE,
) -> Message:
    """A SyncGroup response body (the protocol fields exist from v5 and may be null)."""
    return {
        "throttle_time_ms": 0,
        "error_code": int(error),
        "protocol_type": protocol_type,
        "protocol_name": protocol_name,
        "assignment": assignment,
    }

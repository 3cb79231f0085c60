"""Topic changes as this broker asks for them: at the active controller, wherever it is.

`TopicManager` is what the admin handlers and automatic topic creation call. On the active
controller it runs the change in-process (`QuorumController`); elsewhere `create_topic`
sends a CreateTopics request to the active controller and waits until the new topic has
reached this node's image (the admin handlers forward whole requests themselves, see
`handlers.forwarding`, so the other changes only ever run on the active controller).
Either way the topic exists in the metadata log before the call returns, and the replica
manager, a subscriber of the publisher, opens or deletes the partitions' logs as the
change is applied.

Errors are `TopicError` with the code the client gets: the rules' own, NOT_CONTROLLER when
no controller could take the change, REQUEST_TIMED_OUT when it was taken but not known to
be committed in time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from tidelog.broker.controller.channel import ControllerChannel
from tidelog.broker.controller.controller import QuorumController
from tidelog.broker.controller.quorum import MetadataQuorum, NotControllerError
from tidelog.broker.controller.topics import TopicError
from tidelog.broker.metadata.image import MetadataImage, TopicMetadata
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.admin import CREATE_TOPICS

FORWARD_TIMEOUT_MS = 30_000


@asynccontextmanager
async def _as_topic_errors() -> AsyncIterator[None]:
    try:
        yield
    except NotControllerError as exc:
        raise TopicError(ErrorCode.NOT_CONTROLLER, str(exc)) from None
    except trio.TooSlowError:
        raise TopicError(
            ErrorCode.REQUEST_TIMED_OUT, "the change was not committed in time"
        ) from None


class TopicManager:
    """See the module docstring."""

    def __init__(
        self,
        *,
        quorum: MetadataQuorum,
        controller: QuorumController | None,
        channel: ControllerChannel,
    ) -> None:
        self._quorum = quorum
        self._controller = controller
        self._channel = channel

    @property
    def image(self) -> MetadataImage:
        return self._quorum.image

    def _local(self) -> QuorumController:
        if self._controller is None or not self._quorum.is_active:
            raise TopicError(
                ErrorCode.NOT_CONTROLLER,
                f"this node is not the active controller (leader: {self._quorum.leader_id})",
            )
        return self._controller

    async def create_topic(
        self,
        name: str,
        *,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str | None] | None = None,
        assignments: Sequence[Sequence[int]] | None = None,
        validate_only: bool = False,
    ) -> TopicMetadata:
        """Create a topic (see `controller.topics.create_topic` for the rules and errors);
        with `validate_only` nothing is written and the would-be topic is returned."""
        if not validate_only and (self._controller is None or not self._quorum.is_active):
            forwarded = await self._forward_create(
                name, num_partitions, replication_factor, configs, assignments
            )
            if forwarded is not None:
                return forwarded
        async with _as_topic_errors():
            return await self._local().create_topic(
                name,
                num_partitions=num_partitions,
                replication_factor=replication_factor,
                configs=configs,
                assignments=assignments,
                validate_only=validate_only,
            )

    async def _forward_create(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int,
        configs: Mapping[str, str | None] | None,
        assignments: Sequence[Sequence[int]] | None,
    ) -> TopicMetadata | None:
        """CreateTopics at the active controller; None if this node became it meanwhile."""
        request = {
            "topics": [
                {
                    "name": name,
                    "num_partitions": num_partitions,
                    "replication_factor": replication_factor,
                    "assignments": [
                        {"partition_index": i, "broker_ids": list(replicas)}
                        for i, replicas in enumerate(assignments or ())
                    ],
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                }
            ],
            "timeout_ms": FORWARD_TIMEOUT_MS,
            "validate_only": False,
        }
        async with _as_topic_errors():
            with trio.fail_after(FORWARD_TIMEOUT_MS / 1000):
                answer = await self._channel.call(
                    CREATE_TOPICS.key,
                    request,
                    version=CREATE_TOPICS.valid.highest,
                    timeout_ms=FORWARD_TIMEOUT_MS,
                )
                if answer is None:
                    return None
                result = answer["topics"][0]
                if result["error_code"] != ErrorCode.NONE:
                    raise TopicError(ErrorCode(result["error_code"]), result["error_message"] or "")
                image = await self._quorum.wait_for(lambda i: i.topic(name) is not None)
                topic = image.topic(name)
                assert topic is not None
                return topic

    async def delete_topic(self, name: str) -> TopicMetadata:
        """Delete a topic; TopicError UNKNOWN_TOPIC_OR_PARTITION if absent."""
        async with _as_topic_errors():
            return await self._local().delete_topic(name)

    async def create_partitions(
        self, name: str, count: int, *, validate_only: bool = False
    ) -> TopicMetadata:
        """Grow topic `name` to `count` partitions; returns the new metadata."""
        async with _as_topic_errors():
            return await self._local().create_partitions(name, count, validate_only=validate_only)

    async def alter_configs(
        self, name: str, overrides: Mapping[str, str | None], *, validate_only: bool = False
    ) -> TopicMetadata:
        """Make `overrides` (None values dropped) topic `name`'s config overrides; they
        apply to its open logs once committed (segment settings from the next roll)."""
        async with _as_topic_errors():
            return await self._local().alter_configs(name, overrides, validate_only=validate_only)

"""AlterPartition at the controller: a leader's ISR change checked against the image."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tidelog.broker.controller.partitions import alter_partition
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import (
    BrokerRegistrationChangeRecord,
    Endpoint,
    FencingChange,
    LeaderRecoveryState,
    PartitionRecord,
    TopicRecord,
    unfenced_registration,
)
from tidelog.client.protocol.errors import ErrorCode

TOPIC_ID = uuid.UUID(int=5)


def cluster() -> MetadataImage:
    """Brokers 1-3 live (broker epoch = id), broker 4 fenced; partition 0 of "t" on (1, 2, 3)
    led by 1 with ISR (1, 2)."""
    records: list[Any] = []
    for i in (1, 2, 3, 4):
        records += unfenced_registration(i, i, uuid.UUID(int=i), (Endpoint("PLAINTEXT", "h", i),))
    records += [
        BrokerRegistrationChangeRecord(4, 4, fenced=FencingChange.FENCE),
        TopicRecord("t", TOPIC_ID),
        PartitionRecord(TOPIC_ID, 0, (1, 2, 3, 4), (1, 2), leader=1),
    ]
    return MetadataImage.empty("c", 1).apply_all(records)


def request(
    isr: tuple[int, ...], *, broker: int = 1, broker_epoch: int = 1, leader_epoch: int = 0,
    partition_epoch: int = 0, topic_id: uuid.UUID = TOPIC_ID, index: int = 0,
    recovery: int = LeaderRecoveryState.RECOVERED,
) -> dict[str, Any]:  # fmt: skip
    return {
        "broker_id": broker,
        "broker_epoch": broker_epoch,
        "topics": [
            {
                "topic_id": topic_id,
                "partitions": [
                    {
                        "partition_index": index,
                        "leader_epoch": leader_epoch,
                        "new_isr": list(isr),
                        "new_isr_with_epochs": [],
                        "leader_recovery_state": recovery,
                        "partition_epoch": partition_epoch,
                    }
                ],
            }
        ],
    }


def answer_of(response: dict[str, Any]) -> dict[str, Any]:
    partition: dict[str, Any] = response["topics"][0]["partitions"][0]
    return partition


def test_an_expansion_is_committed_and_answered_with_the_new_partition_epoch() -> None:
    image = cluster()
    records, response = alter_partition(image, request((1, 2, 3)))
    answer = answer_of(response)
    assert answer["error_code"] == ErrorCode.NONE
    after = image.apply_all(records).topic("t")
    assert after is not None
    partition = after.partitions[0]
    assert partition.isr == (1, 2, 3) and partition.leader_id == 1
    assert partition.leader_epoch == 0, "an ISR change keeps the leader epoch"
    assert (answer["isr"], answer["partition_epoch"]) == ([1, 2, 3], partition.partition_epoch)


def test_a_shrink_is_committed() -> None:
    image = cluster()
    records, response = alter_partition(image, request((1,)))
    assert answer_of(response)["error_code"] == ErrorCode.NONE
    topic = image.apply_all(records).topic("t")
    assert topic is not None and topic.partitions[0].isr == (1,)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"broker": 2, "broker_epoch": 2}, ErrorCode.NOT_LEADER_OR_FOLLOWER),
        ({"leader_epoch": 1}, ErrorCode.FENCED_LEADER_EPOCH),
        ({"partition_epoch": 1}, ErrorCode.INVALID_UPDATE_VERSION),
        ({"topic_id": uuid.UUID(int=9)}, ErrorCode.UNKNOWN_TOPIC_ID),
        ({"index": 3}, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ({"recovery": LeaderRecoveryState.RECOVERING}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_a_change_from_the_wrong_leader_epoch_or_place_is_refused(
    changes: dict[str, Any], error: ErrorCode
) -> None:
    records, response = alter_partition(cluster(), request((1, 2, 3), **changes))
    assert records == []
    assert answer_of(response)["error_code"] == error


@pytest.mark.parametrize(
    ("isr", "error"),
    [
        ((2, 3), ErrorCode.INVALID_REQUEST),  # leaves the leader out
        ((1, 2, 2), ErrorCode.INVALID_REQUEST),  # repeats a broker
        ((1, 2, 7), ErrorCode.INVALID_REQUEST),  # not a replica
        ((1, 2, 4), ErrorCode.INELIGIBLE_REPLICA),  # fenced
    ],
)
def test_an_isr_that_cannot_be_is_refused(isr: tuple[int, ...], error: ErrorCode) -> None:
    records, response = alter_partition(cluster(), request(isr))
    assert records == []
    assert answer_of(response)["error_code"] == error
    assert answer_of(response)["isr"] == [1, 2], "answered with the current state"


def test_a_stale_broker_epoch_refuses_the_whole_request() -> None:
    records, response = alter_partition(cluster(), request((1, 2, 3), broker_epoch=7))
    assert records == [] and response["error_code"] == ErrorCode.STALE_BROKER_EPOCH


def test_a_replica_named_with_another_broker_epoch_is_ineligible() -> None:
    wanted = request((1, 2, 3))
    partition = wanted["topics"][0]["partitions"][0]
    partition["new_isr_with_epochs"] = [
        {"broker_id": 1, "broker_epoch": 1},
        {"broker_id": 2, "broker_epoch": 2},
        {"broker_id": 3, "broker_epoch": 99},  # an earlier incarnation of broker 3
    ]
    records, response = alter_partition(cluster(), wanted)
    assert records == [] and answer_of(response)["error_code"] == ErrorCode.INELIGIBLE_REPLICA


def test_a_retry_of_a_committed_change_is_answered_as_done() -> None:
    image = cluster()
    records, _ = alter_partition(image, request((1, 2, 3)))
    image = image.apply_all(records)
    again, response = alter_partition(image, request((1, 2, 3)))  # the old partition epoch
    assert again == []
    answer = answer_of(response)
    assert answer["error_code"] == ErrorCode.NONE and answer["isr"] == [1, 2, 3]

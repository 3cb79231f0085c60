"""A metadata snapshot rebuilds the image it was written from."""

from __future__ import annotations

import dataclasses
import random
import uuid

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.topics import create_topic
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import (
    ConfigRecord,
    Endpoint,
    FeatureLevelRecord,
    PartitionChangeRecord,
    ProducerIdsRecord,
    unfenced_registration,
)
from tidelog.broker.metadata.serde import decode_record, encode_record
from tidelog.broker.metadata.snapshot import image_records
from tidelog.client.protocol.configs import ConfigResourceType


def busy_image() -> MetadataImage:
    rng = random.Random(7)
    image = MetadataImage.empty("cluster-x", 1).apply(FeatureLevelRecord("metadata.version", 27))
    for broker in (1, 2, 3):
        endpoint = Endpoint("PLAINTEXT", "127.0.0.1", 9090 + broker)
        image = image.apply_all(
            unfenced_registration(
                broker, image.offset, uuid.UUID(int=broker), (endpoint,), rack=f"r{broker % 2}"
            )
        )
    config = BrokerConfig()
    image = image.apply_all(
        create_topic(
            image,
            config,
            rng,
            "orders",
            num_partitions=6,
            replication_factor=3,
            configs={"cleanup.policy": "compact"},
        )
    )
    image = image.apply_all(
        create_topic(image, config, rng, "events", num_partitions=2, replication_factor=2)
    )
    orders = image.topic("orders")
    assert orders is not None
    return image.apply_all(
        [
            PartitionChangeRecord(orders.topic_id, 3, leader=2, isr=(2, 3)),
            ProducerIdsRecord(1, 0, 2000),
            ConfigRecord(ConfigResourceType.BROKER, "", "log.retention.ms", "3600000"),
        ]
    )


def test_a_snapshot_rebuilds_the_image_through_the_record_bytes() -> None:
    image = busy_image()
    records = [decode_record(encode_record(r)) for r in image_records(image)]
    rebuilt = MetadataImage.empty("cluster-x", 1).apply_all(records)
    assert dataclasses.replace(rebuilt, offset=image.offset) == image
    orders = rebuilt.partition("orders", 3)
    assert orders is not None and orders.leader_id == 2 and orders.isr == (2, 3)
    assert orders.partition_epoch == 1 and rebuilt.next_producer_id == 2000

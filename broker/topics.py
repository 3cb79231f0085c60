"""Topic management on a single node: the writer of the metadata image while there is no
controller quorum.

`TopicManager` turns topic requests into metadata records with the controller's pure rules
(`controller/topics.py`), writes the topic's file durably (`TopicStore`), and only then
publishes the records; the replica manager, a subscriber of the publisher, opens or deletes
the partitions' logs. So after a crash at any point a restart finds either no topic or the
whole topic (its missing logs are created), and a deleted topic's remaining logs are strays
that the next start deletes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller import topics as rules
from tidelog.broker.metadata.image import MetadataImage, TopicMetadata
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.metadata.records import MetadataRecord
from tidelog.broker.topic_store import StoredTopic, TopicStore

log = logging.getLogger(__name__)


class TopicManager:
    """See the module docstring. Storage failures propagate as OSError (the caller answers
    KAFKA_STORAGE_ERROR); rule violations as `TopicError`."""

    def __init__(
        self,
        *,
        config: BrokerConfig,
        store: TopicStore,
        publisher: MetadataPublisher,
        rng: random.Random,
    ) -> None:
        self.config = config
        self._store = store
        self._publisher = publisher
        self._rng = rng

    @property
    def image(self) -> MetadataImage:
        return self._publisher.image

    def create_topic(
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
        records = rules.create_topic(
            self.image,
            self.config,
            self._rng,
            name,
            num_partitions=num_partitions,
            replication_factor=replication_factor,
            configs=configs,
            assignments=assignments,
        )
        topic = self._commit(name, records, validate_only=validate_only)
        if not validate_only:
            log.info(
                "created topic %s (%s) with %d partitions, replication factor %d",
                name,
                topic.topic_id,
                len(topic.partitions),
                len(topic.partitions[0].replicas),
            )
        return topic

    def delete_topic(self, name: str) -> TopicMetadata:
        """Delete a topic and its local logs; TopicError UNKNOWN_TOPIC_OR_PARTITION if absent."""
        records = rules.delete_topic(self.image, name)
        topic = rules.existing_topic(self.image, name)
        self._store.remove(name)
        self._publisher.publish(records)
        log.info("deleted topic %s (%s)", name, topic.topic_id)
        return topic

    def create_partitions(
        self, name: str, count: int, *, validate_only: bool = False
    ) -> TopicMetadata:
        """Grow topic `name` to `count` partitions; returns the new metadata."""
        current = len(rules.existing_topic(self.image, name).partitions)
        records = rules.create_partitions(self.image, self._rng, name, count)
        grown = self._commit(name, records, validate_only=validate_only)
        if not validate_only:
            log.info("topic %s now has %d partitions (was %d)", name, count, current)
        return grown

    def alter_configs(
        self, name: str, overrides: Mapping[str, str | None], *, validate_only: bool = False
    ) -> TopicMetadata:
        """Make `overrides` (None values dropped) topic `name`'s config overrides; they
        apply to its open logs at once (segment settings from the next roll)."""
        records = rules.alter_configs(self.image, self.config, name, overrides)
        altered = self._commit(name, records, validate_only=validate_only)
        if not validate_only:
            log.info("topic %s configs are now %s", name, dict(altered.configs))
        return altered

    def _commit(
        self, name: str, records: list[MetadataRecord], *, validate_only: bool
    ) -> TopicMetadata:
        """Write the topic's file, then publish: the order a restart relies on."""
        topic = self.image.apply_all(records).topic(name)
        assert topic is not None, f"records for {name} do not leave it in the image"
        if not validate_only:
            self._store.write(StoredTopic.of(topic))
            self._publisher.publish(records)
        return topic

"""The publisher: holds the current metadata image and tells the broker's parts what changed.

`publish(records)` applies the records to the current image, makes the result current, and
calls every subscriber with the node's `LocalChanges` and the new image, in subscription
order, before it returns; `publish_image(image)` does the same with an image made
elsewhere (the metadata log's replay, a snapshot). Subscribers (the replica manager, the
group service) act at once and synchronously; readers (the handlers) just read `image`. A
record that does not apply raises MetadataError and nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tidelog.broker.metadata.delta import LocalChanges
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import MetadataRecord


class MetadataSubscriber(Protocol):
    def on_metadata_update(self, changes: LocalChanges, image: MetadataImage) -> None: ...


class MetadataPublisher:
    """See the module docstring."""

    def __init__(self, image: MetadataImage, node_id: int) -> None:
        self.image = image
        self.node_id = node_id
        self._subscribers: list[MetadataSubscriber] = []

    def subscribe(self, subscriber: MetadataSubscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, records: Iterable[MetadataRecord]) -> LocalChanges:
        return self.publish_image(self.image.apply_all(records))

    def publish_image(self, new: MetadataImage) -> LocalChanges:
        old = self.image
        self.image = new
        changes = LocalChanges.between(old, new, self.node_id)
        for subscriber in self._subscribers:
            subscriber.on_metadata_update(changes, new)
        return changes

"""Per-broker state shared by the data-path handlers (Produce, Fetch, InitProducerId).

- Producer state: one `ProducerStateTable` per local partition log, built on first use by
  replaying the batch headers of the log (so it survives restarts without snapshots), and
  dropped when the log object changes (the topic was deleted and created again).
- Append notification: a Fetch long poll registers a `trio.Event` on the partitions it reads;
  every append to one of them sets it. No polling.
- Producer ids for InitProducerId.

`DataPath.of(broker)` returns the broker's instance (created on first use), so the broker
object needs no knowledge of it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from tidelog.broker.producer_state import ProducerStateTable
from tidelog.storage.log import PartitionLog

if TYPE_CHECKING:
    from tidelog.broker.server import Broker

PartitionKey = tuple[str, int]

PRODUCER_ID_MAX = (1 << 63) - 1


class DataPath:
    """See module docstring."""

    _instances: weakref.WeakKeyDictionary[Broker, DataPath] = weakref.WeakKeyDictionary()

    def __init__(self, broker: Broker) -> None:
        self._producer_states: dict[PartitionKey, tuple[PartitionLog, ProducerStateTable]] = {}
        self._append_watchers: dict[PartitionKey, set[trio.Event]] = {}
        # Producer ids: a random 62-bit starting point, then a counter. A restart picks a new
        # random start, so ids from before the restart are not handed out again (short of a
        # 1 in 2**30-ish collision of two random starts within one id range's use).
        self._next_producer_id = broker.random.getrandbits(62)

    @classmethod
    def of(cls, broker: Broker) -> DataPath:
        instance = cls._instances.get(broker)
        if instance is None:
            instance = cls._instances[broker] = cls(broker)
        return instance

    # -- producer state

    def producer_state(self, key: PartitionKey, log: PartitionLog) -> ProducerStateTable:
        """The producer table of `log`; rebuilt from the log's batches when first asked for."""
        cached = self._producer_states.get(key)
        if cached is not None and cached[0] is log:
            return cached[1]
        table = ProducerStateTable()
        for header in log.batches_from(log.log_start_offset):
            if header.producer_id >= 0 and not header.is_control:
                table.record(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.base_offset,
                    header.last_offset,
                    header.max_timestamp,
                )
        self._producer_states[key] = (log, table)
        return table

    # -- append notification

    def notify_append(self, key: PartitionKey) -> None:
        """Wake every fetch waiting on `key`."""
        for event in self._append_watchers.get(key, ()):
            event.set()

    @contextmanager
    def watch_appends(self, keys: Iterable[PartitionKey]) -> Iterator[trio.Event]:
        """An event set by the next append to any of `keys`, while the context is open."""
        event = trio.Event()
        watched = list(dict.fromkeys(keys))
        for key in watched:
            self._append_watchers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in watched:
                watchers = self._append_watchers.get(key)
                if watchers is not None:
                    watchers.discard(event)
                    if not watchers:
                        del self._append_watchers[key]

    # -- producer ids

    def allocate_producer_id(self) -> int:
        producer_id = self._next_producer_id
        self._next_producer_id = producer_id + 1 if producer_id < PRODUCER_ID_MAX else 0
        return producer_id

"""Which partition a produced record goes to.

Keyed records: a hash of the key modulo the topic's partition count, over all partitions
(available or not), so a key always lands in the same partition while the count is
unchanged.

- "murmur2" (default): Kafka's variant of MurmurHash2 (seed 0x9747b28c, little-endian
  4-byte blocks, the tail folded in as in the reference algorithm), made non-negative by
  clearing the sign bit: `(murmur2(key) & 0x7fffffff) % partitions`. This is the Java
  client's choice and librdkafka's "murmur2_random", so keys co-partition with them.
- "mmh3": MurmurHash3 x86 32-bit with seed 0, taken as unsigned: `mmh3(key) % partitions`.

Records without a key use a sticky partition per topic (KIP-480, with KIP-794's switch
rule): records stick to one randomly chosen available partition until `batch_size` bytes
have gone to it, then another available partition is chosen at random. Big batches form
without skewing the spread across partitions.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from typing import Literal

import mmh3

_MASK32 = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as a signed 32-bit integer (Java `Utils.murmur2`)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    blocks = length // 4
    if blocks:
        for k in struct.unpack_from(f"<{blocks}I", data):
            k = (k * _M) & _MASK32
            k ^= k >> 24
            k = (k * _M) & _MASK32
            h = ((h * _M) & _MASK32) ^ k
    tail = length & 3
    if tail:
        base = blocks * 4
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, num_partitions: int) -> int:
    """The partition the Java client's default partitioner picks for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def mmh3_partition(key: bytes, num_partitions: int) -> int:
    """MurmurHash3 (x86 32-bit, seed 0, unsigned) of `key` modulo `num_partitions`."""
    return int(mmh3.hash(key, 0, signed=False)) % num_partitions


class Partitioner:
    """Chooses partitions; keeps the sticky state for records without a key.

    Plain object: the producer calls `partition` once per record, in send order.
    """

    def __init__(
        self,
        hash_name: Literal["murmur2", "mmh3"] = "murmur2",
        *,
        batch_size: int = 16_384,
        rng: random.Random | None = None,
    ) -> None:
        if hash_name == "murmur2":
            self._keyed = murmur2_partition
        elif hash_name == "mmh3":
            self._keyed = mmh3_partition
        else:
            raise ValueError(f"unknown partitioner hash {hash_name!r}")
        self._switch_after_bytes = max(batch_size, 1)
        self._rng = rng or random.Random()
        # topic -> [sticky partition, bytes sent to it since it was chosen]
        self._sticky: dict[str, list[int]] = {}

    def partition(
        self,
        topic: str,
        key: bytes | None,
        record_bytes: int,
        num_partitions: int,
        available: Callable[[], Sequence[int]],
    ) -> int:
        """The partition for one record of about `record_bytes` bytes.

        `available()` lists the partitions that have a leader (asked only when a sticky
        partition is chosen); records without a key go only to those, or to any partition
        when none has one, so that they wait for a leader.
        """
        if num_partitions <= 0:
            raise ValueError(f"topic {topic!r} has no partitions")
        if key is not None:
            return self._keyed(key, num_partitions)
        state = self._sticky.get(topic)
        if state is None or state[0] >= num_partitions or state[1] >= self._switch_after_bytes:
            previous = None if state is None else state[0]
            state = [self._choose(num_partitions, available(), previous), 0]
            self._sticky[topic] = state
        state[1] += record_bytes
        return state[0]

    def _choose(self, num_partitions: int, available: Sequence[int], previous: int | None) -> int:
        candidates = [p for p in available if p < num_partitions] or range(num_partitions)
        if previous is not None and len(candidates) > 1:
            candidates = [p for p in candidates if p != previous]
        return candidates[self._rng.randrange(len(candidates))]

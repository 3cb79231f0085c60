"""Keyed records land where the Java client puts them; keyless records stick, then spread."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from tidelog.client.partitioner import Partitioner, mmh3_partition, murmur2, murmur2_partition


def reference_murmur2(data: bytes) -> int:
    """MurmurHash2 as published (Appleby), with Kafka's seed, written out byte by byte with
    explicit 32-bit wrap-around; returns Java's signed int."""
    m, r, seed = 0x5BD1E995, 24, 0x9747B28C

    def u32(x: int) -> int:
        return x % (1 << 32)

    length = len(data)
    h = u32(seed ^ length)
    i = 0
    while length - i >= 4:
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = u32(k * m)
        k ^= k >> r
        k = u32(k * m)
        h = u32(h * m)
        h ^= k
        i += 4
    rest = length - i
    if rest >= 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = u32(h * m)
    h ^= h >> 13
    h = u32(h * m)
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


# Published test vectors: Kafka's UtilsTest.testMurmur2 (signed Java ints) and
# librdkafka's unittest_murmur2 (the same hashes as unsigned hex).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
LIBRDKAFKA_VECTORS = {
    b"kafka": 0xD067CF64,
    b"giberish123456789": 0x8F552B0C,
    b"1234": 0x9FC97B14,
    b"234": 0xE7C009CA,
    b"34": 0x873930DA,
    b"4": 0x5A4B5CA1,
    b"PreAmbleWillBeRemoved,ThePrePartThatIs": 0x78424F1C,
    b"reAmbleWillBeRemoved,ThePrePartThatIs": 0x4A62B377,
    b"eAmbleWillBeRemoved,ThePrePartThatIs": 0xE0E4E09E,
    b"AmbleWillBeRemoved,ThePrePartThatIs": 0x62B8B43F,
    b"": 0x106E08D9,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_VECTORS.items()))
def test_murmur2_matches_java_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert reference_murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), sorted(LIBRDKAFKA_VECTORS.items()))
def test_murmur2_matches_librdkafka_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) & 0xFFFFFFFF == expected


def test_murmur2_agrees_with_reference_and_kafka_python_on_random_keys() -> None:
    rng = random.Random(2024)
    for _ in range(2000):
        key = rng.randbytes(rng.randrange(0, 70))
        expected = reference_murmur2(key)
        assert murmur2(key) == expected, key
        assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key), key


def test_keyed_partition_is_the_java_choice_for_every_partition_count() -> None:
    rng = random.Random(7)
    keys = [f"user-{i}".encode() for i in range(300)] + [rng.randbytes(16) for _ in range(300)]
    for num_partitions in (1, 2, 3, 7, 12, 100, 1000):
        for key in keys:
            java = (reference_murmur2(key) & 0x7FFFFFFF) % num_partitions
            assert murmur2_partition(key, num_partitions) == java


def test_known_key_partitions() -> None:
    # murmur2("kafka") = 0xd067cf64 -> 0x5067cf64 = 1348980580 after clearing the sign bit
    assert murmur2_partition(b"kafka", 10) == 1348980580 % 10
    # -973932308 & 0x7fffffff = 1173551340
    assert murmur2_partition(b"21", 16) == 1173551340 % 16


def test_partitioner_uses_all_partitions_for_keys_even_without_leaders() -> None:
    partitioner = Partitioner("murmur2", rng=random.Random(1))
    for i in range(200):
        key = f"k{i}".encode()
        chosen = partitioner.partition("t", key, 50, 6, lambda: [0])
        assert chosen == murmur2_partition(key, 6)


def test_mmh3_partitioner_is_deterministic_and_in_range() -> None:
    partitioner = Partitioner("mmh3", rng=random.Random(1))
    seen = set()
    for i in range(500):
        key = f"k{i}".encode()
        chosen = partitioner.partition("t", key, 10, 8, lambda: list(range(8)))
        assert (
            chosen == mmh3_partition(key, 8) == partitioner.partition("t", key, 10, 8, lambda: [])
        )
        assert 0 <= chosen < 8
        seen.add(chosen)
    assert seen == set(range(8))
    # The two hashes are different functions: they disagree on some keys.
    assert any(
        mmh3_partition(f"k{i}".encode(), 8) != murmur2_partition(f"k{i}".encode(), 8)
        for i in range(50)
    )


def test_sticky_partition_holds_for_a_batch_then_moves_to_another_available_one() -> None:
    partitioner = Partitioner("murmur2", batch_size=1000, rng=random.Random(3))
    available = [1, 3, 5]
    picks = [partitioner.partition("t", None, 100, 6, lambda: available) for _ in range(10)]
    assert len(set(picks)) == 1  # 10 x 100 bytes = one batch's worth on one partition
    assert picks[0] in available
    following = partitioner.partition("t", None, 100, 6, lambda: available)
    assert following != picks[0] and following in available


def test_sticky_partitions_spread_evenly_and_per_topic() -> None:
    partitioner = Partitioner("murmur2", batch_size=500, rng=random.Random(5))
    counts: Counter[int] = Counter()
    for _ in range(40_000):
        counts[partitioner.partition("a", None, 50, 4, lambda: [0, 1, 2, 3])] += 1
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 0.7 * max(counts.values())
    other = Partitioner("murmur2", batch_size=500, rng=random.Random(5))
    assert other.partition("b", None, 50, 2, lambda: [1]) == 1


def test_sticky_partition_falls_back_to_any_partition_without_leaders() -> None:
    partitioner = Partitioner("murmur2", rng=random.Random(9))
    assert 0 <= partitioner.partition("t", None, 10, 3, lambda: []) < 3


def test_sticky_partition_is_rechosen_when_partition_count_shrinks() -> None:
    partitioner = Partitioner("murmur2", batch_size=10**9, rng=random.Random(11))
    first = partitioner.partition("t", None, 10, 100, lambda: list(range(100)))
    shrunk = partitioner.partition("t", None, 10, 1, lambda: [0])
    assert shrunk == 0
    assert first >= 0


def test_partitioner_rejects_a_topic_without_partitions() -> None:
    with pytest.raises(ValueError):
        Partitioner().partition("t", b"k", 1, 0, lambda: [])

"""kcat (librdkafka's command-line client) against a tidelog broker process: `-L` metadata,
`-P` producing keyed lines with headers to one partition, `-C` reading them back from the
beginning to the end (`-e`), as a `-f` format and as JSON (`-J`).

The Debian kcat links an older librdkafka (2.0.2 here), which decides what the broker can do
from exact versions inside the advertised ranges, so it checks our
ApiVersions answer more strictly than the bundled librdkafka of confluent-kafka does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from tests.interop.conftest import BrokerProcess
from tidelog.client.protocol.records import Compression

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed")

KCAT_TIMEOUT_S = 20
# At the end of a partition the broker holds a fetch for its max wait before answering empty;
# librdkafka's default (500 ms) would make every `-e` run wait that long to see the end.
FETCH_WAIT_MAX_MS = 20
PARTITION = 1
RECORD_COUNT = 8
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
HEADERS = [("trace", "abc"), ("dup", "1"), ("dup", "2"), ("empty", "")]


def kcat(broker: BrokerProcess, *args: str, stdin: str | None = None) -> str:
    assert KCAT is not None
    completed = subprocess.run(
        [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args],
        input=None if stdin is None else stdin.encode(),
        capture_output=True,
        timeout=KCAT_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    return completed.stdout.decode()


def consume(broker: BrokerProcess, topic: str, *args: str) -> str:
    """`kcat -C` from the beginning to the end of `topic`; `args` adds options."""
    wait = f"fetch.wait.max.ms={FETCH_WAIT_MAX_MS}"
    return kcat(broker, "-X", wait, "-C", "-t", topic, "-o", "beginning", "-e", "-q", *args)


def sample_lines(count: int) -> list[tuple[str, str]]:
    """(key, value) pairs; values long and repetitive so every codec shrinks them."""
    return [(f"key-{i}", f"value-{i}-" + "abc" * 100) for i in range(count)]


def produce_lines(
    broker: BrokerProcess, topic: str, lines: list[tuple[str, str]], codec: str
) -> None:
    """`kcat -P` of `key<TAB>value` lines to PARTITION, each with HEADERS."""
    args = ["-P", "-t", topic, "-p", str(PARTITION), "-K", "\t", "-z", codec]
    args += [arg for name, value in HEADERS for arg in ("-H", f"{name}={value}")]
    kcat(broker, *args, stdin="".join(f"{key}\t{value}\n" for key, value in lines))


def test_metadata_lists_the_broker_and_the_topic(
    tidelog_broker: BrokerProcess, unique_topic: str
) -> None:
    metadata = json.loads(kcat(tidelog_broker, "-L", "-J", "-t", unique_topic))

    assert metadata["brokers"] == [{"id": 0, "name": tidelog_broker.bootstrap}]
    assert metadata["controllerid"] == 0
    assert metadata["topics"] == [
        {
            "topic": unique_topic,
            "partitions": [
                {"partition": p, "leader": 0, "replicas": [{"id": 0}], "isrs": [{"id": 0}]}
                for p in range(tidelog_broker.partitions)
            ],
        }
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_produce_then_consume_from_the_beginning(
    tidelog_broker: BrokerProcess, unique_topic: str, codec: str
) -> None:
    lines = sample_lines(RECORD_COUNT)
    started_ms = int(time.time() * 1000)
    produce_lines(tidelog_broker, unique_topic, lines, codec)
    finished_ms = int(time.time() * 1000)

    formatted = consume(
        tidelog_broker, unique_topic, "-p", str(PARTITION), "-f", "%t\t%p\t%o\t%k\t%s\t%h\t%T\n"
    )
    rows = [row.split("\t") for row in formatted.splitlines()]
    header_text = ",".join(f"{name}={value}" for name, value in HEADERS)
    assert [row[:6] for row in rows] == [
        [unique_topic, str(PARTITION), str(offset), key, value, header_text]
        for offset, (key, value) in enumerate(lines)
    ]
    # kcat stamps CreateTime when it produces; the broker keeps it.
    assert all(started_ms <= int(row[6]) <= finished_ms for row in rows)

    # The whole topic: every record in the one partition it was sent to, headers in order.
    messages = [
        json.loads(line) for line in consume(tidelog_broker, unique_topic, "-J").splitlines()
    ]
    assert [
        (m["partition"], m["offset"], m["key"], m["payload"], m["headers"], m["tstype"])
        for m in messages
    ] == [
        (PARTITION, offset, key, value, [s for header in HEADERS for s in header], "create")
        for offset, (key, value) in enumerate(lines)
    ]


# librdkafka before 2.11.1 (Debian's kcat) compresses with gzip or snappy only if the broker
# advertises Produce v0, with lz4 only if it also advertises FindCoordinator v0, and with zstd
# only from Produce 7 / Fetch 10; otherwise it silently sends batches uncompressed. This test
# keeps the advertised ranges honest.
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_batches_are_stored_with_the_requested_codec(
    tidelog_broker: BrokerProcess, unique_topic: str, codec: str
) -> None:
    produce_lines(tidelog_broker, unique_topic, sample_lines(RECORD_COUNT), codec)

    batches = tidelog_broker.stored_batches(unique_topic, PARTITION)
    assert sum(b.records_count for b in batches) == RECORD_COUNT
    assert {b.compression for b in batches} == {Compression[codec.upper()]}

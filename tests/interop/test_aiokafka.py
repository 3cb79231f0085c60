"""aiokafka against a tidelog broker process, in a subprocess (aiokafka needs asyncio; the
test process runs trio): `aiokafka_roundtrip.py` produces the sample records, reads the
partitions back by manual assignment and prints both as JSON lines, which are compared here
field by field: partition, offset, order, key, value, headers, timestamp. aiokafka brings
every codec through cramjam, so all of them are exercised.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import BrokerProcess, SampleRecord, sample_records
from tidelog.client.protocol.records import Compression

pytest.importorskip("aiokafka")

SCRIPT = Path(__file__).with_name("aiokafka_roundtrip.py")
RECORD_COUNT = 12
SCRIPT_TIMEOUT_S = 20


def run_roundtrip(
    broker: BrokerProcess,
    topic: str,
    records: list[SampleRecord],
    *,
    acks: str,
    codec: str,
    idempotence: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the script; its (produced, consumed) JSON lines."""
    stdin = json.dumps(
        [
            {
                "partition": r.partition,
                "key": None if r.key is None else r.key.hex(),
                "value": None if r.value is None else r.value.hex(),
                "headers": [[name, value.hex()] for name, value in r.headers],
                "timestamp_ms": r.timestamp_ms,
            }
            for r in records
        ]
    )
    command = [sys.executable, str(SCRIPT), broker.bootstrap, topic]
    command += ["--acks", acks, "--compression", codec, "--timeout-s", str(SCRIPT_TIMEOUT_S)]
    if idempotence:
        command.append("--idempotence")
    # The script has its own deadline; this one only catches a hung interpreter.
    completed = subprocess.run(
        command, input=stdin.encode(), capture_output=True, timeout=SCRIPT_TIMEOUT_S + 10
    )
    assert completed.returncode == 0, completed.stderr.decode()
    lines = [json.loads(line) for line in completed.stdout.decode().splitlines()]
    produced = [line for line in lines if line["kind"] == "produced"]
    consumed = [line for line in lines if line["kind"] == "consumed"]
    assert len(produced) + len(consumed) == len(lines)
    return produced, consumed


@pytest.mark.parametrize(
    ("acks", "codec", "idempotence"),
    [
        ("1", "none", False),
        ("0", "gzip", False),
        ("all", "snappy", False),
        ("1", "lz4", False),
        ("all", "zstd", True),
        ("all", "gzip", True),
    ],
)
def test_producer_and_consumer_round_trip(
    tidelog_broker: BrokerProcess, unique_topic: str, acks: str, codec: str, idempotence: bool
) -> None:
    records = sample_records(RECORD_COUNT, tidelog_broker.partitions)

    produced, consumed = run_roundtrip(
        tidelog_broker, unique_topic, records, acks=acks, codec=codec, idempotence=idempotence
    )

    # With acks 0 the broker answers nothing, so the producer learns no offsets.
    want_offsets = [-1 if acks == "0" else r.offset for r in records]
    assert produced == [
        {"kind": "produced", "partition": r.partition, "offset": offset}
        for r, offset in zip(records, want_offsets, strict=True)
    ]
    # The consumer's order across partitions is its own business; within one it is the log's.
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for line in consumed:
        by_partition.setdefault(line["partition"], []).append(line)
    want: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        want.setdefault(r.partition, []).append(
            {
                "kind": "consumed",
                "topic": unique_topic,
                "partition": r.partition,
                "offset": r.offset,
                "key": None if r.key is None else r.key.hex(),
                "value": None if r.value is None else r.value.hex(),
                "headers": [[name, value.hex()] for name, value in r.headers],
                "timestamp_ms": r.timestamp_ms,
            }
        )
    assert by_partition == want
    for partition in want:
        batches = tidelog_broker.stored_batches(unique_topic, partition)
        assert {b.compression for b in batches} == {Compression[codec.upper()]}
        assert all((b.producer_id >= 0) == idempotence for b in batches)

"""Codec throughput: Produce requests, record batches and compression, per codec.

    python -m bench.codec [--smoke] [--seconds S] [--codec NAME ...]

The workload is a Produce request (v9, one topic) carrying `batches` record batches of
`batch_records` records each, one batch per partition, holding about 1 MiB of records before
compression: ~100-byte JSON-like values with 8-byte keys, like small application events.
Per codec it measures:

- encode records: `encode_batch` for every batch (compression included), records/s;
- decode records: `decode_batches` over every partition's records, records/s;
- encode request / decode request: the Produce request around the encoded batches, ms;
- validate: `iter_batches` over every partition's records, as the broker does for a
  produce, MB/s of batch bytes on the wire.

Each figure is the best of repeated runs lasting at least `--seconds`. `--smoke` runs tiny
sizes once, to check that the benchmark works.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidelog.client.protocol.apis import decode_request_header, encode_request
from tidelog.client.protocol.messages.data import PRODUCE
from tidelog.client.protocol.records import (
    Compression,
    RecordInput,
    decode_batches,
    encode_batch,
    iter_batches,
)
from tidelog.client.protocol.schema import Message

PRODUCE_VERSION = 9
TOPIC = "bench-codec"
VALUE_BYTES = 100


@dataclass(frozen=True, slots=True)
class Workload:
    batches: int
    batch_records: int
    seconds: float


FULL = Workload(batches=9, batch_records=1000, seconds=1.0)
SMOKE = Workload(batches=2, batch_records=20, seconds=0.0)


@dataclass(frozen=True, slots=True)
class Result:
    codec: Compression
    request_bytes: int
    records: int
    encode_records_per_s: float
    decode_records_per_s: float
    encode_request_ms: float
    decode_request_ms: float
    validate_mb_per_s: float


def make_records(rng: random.Random, count: int, start_ms: int) -> list[RecordInput]:
    """Small JSON-like events: a repeated shape with varying numbers, so codecs compress
    them about as well as real application records."""
    records = []
    for i in range(count):
        body = b'{"user":%d,"event":"page_view","path":"/items/%d","ms":%d,"pad":"' % (
            rng.randrange(10**6),
            rng.randrange(10**4),
            rng.randrange(10**4),
        )
        body += b"x" * max(0, VALUE_BYTES - len(body) - 2) + b'"}'
        records.append(
            RecordInput(value=body, key=b"%08d" % rng.randrange(10**8), timestamp_ms=start_ms + i)
        )
    return records


def best_seconds(operation: Callable[[], object], min_seconds: float) -> float:
    """The fastest of repeated runs of `operation`, repeating for at least `min_seconds`."""
    best = float("inf")
    deadline = time.perf_counter() + min_seconds
    runs = 0
    while runs < 1 or (time.perf_counter() < deadline and runs < 10_000):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
        runs += 1
    return best


def produce_request(batches: Sequence[bytes]) -> Message:
    return {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 30_000,
        "topic_data": [
            {
                "name": TOPIC,
                "partition_data": [
                    {"index": partition, "records": batch}
                    for partition, batch in enumerate(batches)
                ],
            }
        ],
    }


def partition_records(frame: bytes) -> list[memoryview]:
    """The records field of every partition in a Produce request frame (size prefix first)."""
    _, reader = decode_request_header(memoryview(frame)[4:])
    request = PRODUCE.decode_request(reader, PRODUCE_VERSION)
    return [
        partition["records"]
        for topic in request["topic_data"]
        for partition in topic["partition_data"]
    ]


def run_codec(codec: Compression, workload: Workload, rng: random.Random) -> Result:
    per_batch = [
        make_records(rng, workload.batch_records, 1_700_000_000_000 + i * workload.batch_records)
        for i in range(workload.batches)
    ]
    total_records = workload.batches * workload.batch_records

    def encode_records() -> list[bytes]:
        return [encode_batch(records, compression=codec) for records in per_batch]

    batches = encode_records()
    frame = encode_request(0, PRODUCE_VERSION, 1, "bench", produce_request(batches))
    records_fields = partition_records(frame)

    decoded = [records for field in records_fields for _, records in decode_batches(field)]
    assert sum(len(records) for records in decoded) == total_records
    assert decoded[0][0].value == per_batch[0][0].value
    validated_bytes = sum(h.total_bytes for field in records_fields for h in iter_batches(field))
    assert validated_bytes == sum(len(b) for b in batches)

    def decode_records() -> None:
        for field in records_fields:
            for _ in decode_batches(field):
                pass

    def validate() -> None:
        for field in records_fields:
            for _ in iter_batches(field):
                pass

    seconds = workload.seconds
    encode_s = best_seconds(encode_records, seconds)
    decode_s = best_seconds(decode_records, seconds)
    encode_request_s = best_seconds(
        lambda: encode_request(0, PRODUCE_VERSION, 1, "bench", produce_request(batches)), seconds
    )
    decode_request_s = best_seconds(lambda: partition_records(frame), seconds)
    validate_s = best_seconds(validate, seconds)
    return Result(
        codec=codec,
        request_bytes=len(frame),
        records=total_records,
        encode_records_per_s=total_records / encode_s,
        decode_records_per_s=total_records / decode_s,
        encode_request_ms=encode_request_s * 1e3,
        decode_request_ms=decode_request_s * 1e3,
        validate_mb_per_s=validated_bytes / validate_s / 1e6,
    )


COLUMNS = (
    ("codec", 6),
    ("request KiB", 11),
    ("records", 7),
    ("encode rec/s", 12),
    ("decode rec/s", 12),
    ("encode req ms", 13),
    ("decode req ms", 13),
    ("validate MB/s", 13),
)


def format_row(result: Result) -> str:
    cells = (
        result.codec.name.lower(),
        f"{result.request_bytes / 1024:.1f}",
        f"{result.records}",
        f"{result.encode_records_per_s:,.0f}",
        f"{result.decode_records_per_s:,.0f}",
        f"{result.encode_request_ms:.3f}",
        f"{result.decode_request_ms:.3f}",
        f"{result.validate_mb_per_s:,.0f}",
    )
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each")
    parser.add_argument("--seconds", type=float, help="minimum time per measurement")
    parser.add_argument(
        "--codec",
        action="append",
        choices=[c.name.lower() for c in Compression],
        help="codecs to run (default: all)",
    )
    args = parser.parse_args(argv)
    workload = SMOKE if args.smoke else FULL
    if args.seconds is not None:
        workload = Workload(workload.batches, workload.batch_records, args.seconds)
    codecs = [Compression[name.upper()] for name in args.codec] if args.codec else list(Compression)

    print(
        f"Produce v{PRODUCE_VERSION}: {workload.batches} batches x {workload.batch_records} "
        f"records, ~{VALUE_BYTES}-byte values"
    )
    print("  ".join(name.rjust(width) for name, width in COLUMNS))
    for codec in codecs:
        result = run_codec(codec, workload, random.Random(codec.value))
        print(format_row(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

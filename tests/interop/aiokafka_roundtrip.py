"""Produce records with aiokafka, then read the partitions back with aiokafka.

aiokafka runs on asyncio, so the trio tests run this script in a subprocess:

    python aiokafka_roundtrip.py BOOTSTRAP TOPIC --acks {0,1,all} --compression CODEC
        [--idempotence] [--timeout-s 20]  < records.json

stdin is a JSON array of records to send, in order, each
`{"partition": int, "key": hex|null, "value": hex|null, "headers": [[name, hex], ...],
"timestamp_ms": int}` (bytes as hex strings, so any byte value survives JSON).

stdout is JSON lines: first one `{"kind": "produced", "partition", "offset"}` per record in
the order sent (the offset the producer was told; -1 with acks 0), then
`{"kind": "consumed", ...}` per record read, in the order the consumer returned them, with
`topic`, `partition`, `offset`, `key`, `value`, `headers` and `timestamp_ms`. The consumer
uses no group: it assigns every partition that was written, seeks to the beginning and reads
until its position reaches each partition's end offset (ListOffsets) and at least the number
of records sent there, so records that should not be there show up too. Any failure,
including the deadline, exits non-zero with a traceback on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

CLIENT_TIMEOUT_MS = 10_000
POLL_TIMEOUT_MS = 500


def _hex_or_none(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def _bytes_or_none(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def _emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, **fields}), flush=True)


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[dict[str, Any]],
    *,
    acks: int | str,
    compression: str | None,
    idempotence: bool,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=acks,
        compression_type=compression,
        enable_idempotence=idempotence,
        request_timeout_ms=CLIENT_TIMEOUT_MS,
        # A long linger puts the records of a partition into one batch, so a compressed
        # batch holds several records and the consumer's seek lands inside it.
        linger_ms=50,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=_bytes_or_none(record["key"]),
                value=_bytes_or_none(record["value"]),
                partition=record["partition"],
                timestamp_ms=record["timestamp_ms"],
                headers=[(name, bytes.fromhex(value)) for name, value in record["headers"]],
            )
            for record in records
        ]
        for record, metadata in zip(records, await asyncio.gather(*futures), strict=True):
            # With acks 0 the broker says nothing, and aiokafka resolves the send to None.
            if metadata is None:
                _emit("produced", partition=record["partition"], offset=-1)
            else:
                _emit("produced", partition=metadata.partition, offset=metadata.offset)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, sent_counts: Mapping[int, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=CLIENT_TIMEOUT_MS,
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(sent_counts)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        end_offsets: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
        # With acks 0 the last appends may land after ListOffsets answered: read at least
        # as far as what was sent, and as far as the log goes if it holds more.
        targets = {tp: max(end, sent_counts[tp.partition]) for tp, end in end_offsets.items()}
        # Bounded by the caller's deadline (asyncio.timeout around the whole run).
        while [tp for tp, target in targets.items() if await consumer.position(tp) < target]:
            batches = await consumer.getmany(*assigned, timeout_ms=POLL_TIMEOUT_MS)
            for messages in batches.values():
                for message in messages:
                    _emit(
                        "consumed",
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=_hex_or_none(message.key),
                        value=_hex_or_none(message.value),
                        headers=[[name, value.hex()] for name, value in message.headers],
                        timestamp_ms=message.timestamp,
                    )
    finally:
        await consumer.stop()


async def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--acks", choices=["0", "1", "all"], default="all")
    parser.add_argument("--compression", default="none")
    parser.add_argument("--idempotence", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    records: list[dict[str, Any]] = json.load(sys.stdin)
    async with asyncio.timeout(args.timeout_s):
        await produce(
            args.bootstrap,
            args.topic,
            records,
            acks=args.acks if args.acks == "all" else int(args.acks),
            compression=None if args.compression == "none" else args.compression,
            idempotence=args.idempotence,
        )
        await consume(
            args.bootstrap, args.topic, Counter(record["partition"] for record in records)
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

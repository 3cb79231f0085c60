"""File ranges in responses: os.sendfile on plaintext TCP, bytes elsewhere, always intact."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from tests.integration.conftest import StartBroker, local_config
from tidelog.broker import connection as broker_connection
from tidelog.broker.handlers import ROUTES
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.router import RequestContext, Router, route
from tidelog.client.protocol.schema import Message
from tidelog.storage.filesystem import FileRange, FileSystem, MemoryFileSystem, OsFileSystem

FETCH = 1
FILE_BYTES = 3 * 1024 * 1024 + 17  # several socket buffers: sendfile must resume


def fetch_router(fs: FileSystem, path: str, length: int) -> Router:
    """ApiVersions and Metadata as usual, plus a Fetch that returns `path`'s bytes
    [100, 100 + length) as the records of one partition."""

    async def fetch(ctx: RequestContext, request: Message) -> Message:
        file = fs.open(path)
        return {
            "responses": [
                {
                    "topic": "t",
                    "partitions": [{"partition_index": 0, "records": FileRange(file, 100, length)}],
                }
            ]
        }

    return Router([*(r for r in ROUTES if r.key != FETCH), route(FETCH, "4-4", fetch)])


def write_file(fs: FileSystem, path: str) -> bytes:
    data = random.Random(5).randbytes(FILE_BYTES)
    handle = fs.open(path, create=True)
    handle.append(data)
    handle.close()
    return data


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(broker_connection.os, "sendfile", counting)
    return calls


async def test_plaintext_tcp_sends_file_ranges_with_sendfile(
    start_broker: StartBroker, tmp_path: Path, sendfile_calls: list[int]
) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "segment.log")
    data = write_file(fs, path)
    length = FILE_BYTES - 200
    running = await start_broker(
        local_config(tmp_path / "data"), router=fetch_router(fs, path, length)
    )
    async with await running.client() as client:
        # Pipelined with small responses around it: the order and framing hold.
        first = await client.send(18, 0)
        fetch_id = await client.send(FETCH, 4, {})
        last = await client.send(18, 0)
        assert (await client.receive(18, 0))[0] == first
        got, response = await client.receive(FETCH, 4)
        assert got == fetch_id
        records = response["responses"][0]["partitions"][0]["records"]
        assert bytes(records) == data[100 : 100 + length]
        assert (await client.receive(18, 0))[0] == last
    assert sendfile_calls and sendfile_calls[0] == length


async def test_memory_network_and_filesystem_send_the_bytes(
    start_broker: StartBroker, sendfile_calls: list[int]
) -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/files")
    data = write_file(fs, "/files/segment.log")
    running = await start_broker(
        local_config("/data"),
        network=MemoryNetwork(),
        fs=fs,
        router=fetch_router(fs, "/files/segment.log", 5000),
    )
    async with await running.client() as client:
        response = await client.request(FETCH, 4, {})
    records = response["responses"][0]["partitions"][0]["records"]
    assert bytes(records) == data[100:5100]
    assert sendfile_calls == []


@pytest.mark.parametrize("network", ["tcp", "memory"])
async def test_a_range_past_the_end_of_its_file_closes_the_connection(
    start_broker: StartBroker, tmp_path: Path, network: str
) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "segment.log")
    write_file(fs, path)
    running = await start_broker(
        local_config(tmp_path / "data"),
        network=MemoryNetwork() if network == "memory" else None,
        router=fetch_router(fs, path, FILE_BYTES),  # 100 bytes too long
    )
    async with await running.client() as client:
        await client.send(FETCH, 4, {})
        # The frame's length was promised; the broker cannot keep it, so it hangs up.
        with trio.fail_after(10):
            assert await client.read_frame() is None

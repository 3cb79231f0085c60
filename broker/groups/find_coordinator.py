"""FindCoordinator (10) answers, built from a lookup the caller supplies. No I/O.

Which node coordinates a key depends on the cluster (the leader of the key's
`__consumer_offsets` partition, for a group), so the caller passes `locate(key_type, key)`,
returning the node or the error to answer: COORDINATOR_NOT_AVAILABLE while the partition has
no leader, INVALID_REQUEST for a key type it does not serve. Versions 0-3 ask for one key
(version 0 for a group only); version 4+ asks for a batch and gets one entry per key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1
FIRST_BATCHED_VERSION = 4


@dataclass(frozen=True, slots=True)
class CoordinatorNode:
    node_id: int
    host: str
    port: int


Locate = Callable[[int, str], CoordinatorNode | ErrorCode]


def find_coordinator_response(request: Message, version: int, locate: Locate) -> Message:
    key_type: int = request["key_type"]  # the codec fills 0 (group) for version 0
    if version >= FIRST_BATCHED_VERSION:
        return {
            "throttle_time_ms": 0,
            "coordinators": [
                {"key": key, **_located(locate(key_type, key))}
                for key in request["coordinator_keys"]
            ],
        }
    return {"throttle_time_ms": 0, **_located(locate(key_type, request["key"]))}


def _located(found: CoordinatorNode | ErrorCode) -> Message:
    if isinstance(found, CoordinatorNode):
        return {
            "error_code": 0,
            "error_message": None,
            "node_id": found.node_id,
            "host": found.host,
            "port": found.port,
        }
    return {"error_code": int(found), "error_message": None, "node_id": -1, "host": "", "port": -1}

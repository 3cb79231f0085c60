"""tidelog: a distributed event log broker on trio that speaks the Kafka wire protocol, with
its own trio client.

    from tidelog import Admin, Consumer, NewTopic, Producer, TopicPartition

The client's public names are re-exported here and load on first use, as in
`tidelog.client`; the broker is `tidelog.broker`, the on-disk log `tidelog.storage` and the
wire format `tidelog.client.protocol`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidelog import client as _client

__all__ = list(_client.__all__)


def __getattr__(name: str) -> Any:
    if name in _client.__all__:
        return getattr(_client, name)
    raise AttributeError(f"module 'tidelog' has no attribute {name!r}")


if TYPE_CHECKING:
    from tidelog.client import *  # noqa: F403

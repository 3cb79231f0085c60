"""Every log line says which node wrote it: several brokers share a process in tests and
simulations, and one line without its node is a line nobody can place.

`node_logging(node_id)` sets the node for the current task and, since trio copies the
context into each task at spawn, for every task the broker starts inside it. The
`NodeIdFilter` (installed on a handler) puts it on each record as `record.node_id`
("-" outside any broker), so formats can use `%(node_id)s`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

_NODE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "tidelog_node_id", default=None
)

LOG_FORMAT = "%(asctime)s %(levelname)s [node %(node_id)s] %(name)s: %(message)s"


def current_node_id() -> int | None:
    return _NODE_ID.get()


@contextmanager
def node_logging(node_id: int) -> Iterator[None]:
    token = _NODE_ID.set(node_id)
    try:
        yield
    finally:
        _NODE_ID.reset(token)


class NodeIdFilter(logging.Filter):
    """Adds `record.node_id`; passes every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        node_id = _NODE_ID.get()
        record.node_id = "-" if node_id is None else node_id
        return True

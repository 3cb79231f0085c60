"""What the coordinator core hands its driver: responses, appends, and the next deadline.

Every public call on `GroupCoordinator` returns an `Output`:

- `responses`: (request id, response body) pairs ready to send now. They may answer requests
  from earlier calls (a JoinGroup parked until its rebalance completes). No response in an
  `Output` waits for any append: responses that need their records durable are held inside
  the core and appear in the `Output` of `append_completed` once the driver reports the
  append, so the driver can send every response it is given at once.
- `appends`: batches of records for `__consumer_offsets`. The driver writes each `Append`
  atomically (one record batch) to its partition, in the order given (across calls, too),
  and then reports each outcome, in that same order within each partition, through
  `GroupCoordinator.append_completed(append_id, error, now_ms)`.
- `next_deadline_ms`: when the driver must call `tick` next (None: nothing scheduled).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from tidelog.broker.groups.records import CoordinatorRecord
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

RequestId = Hashable
"""Chosen by the driver to match responses to requests; the core only compares them."""

AppendDone = Callable[[ErrorCode], None]


@dataclass(frozen=True, slots=True)
class Append:
    """Records to write, as one batch, to partition `partition` of `__consumer_offsets`."""

    append_id: int
    partition: int
    records: tuple[CoordinatorRecord, ...]


@dataclass(frozen=True, slots=True)
class Output:
    """See the module docstring."""

    responses: list[tuple[RequestId, Message]]
    appends: list[Append]
    next_deadline_ms: int | None


class Effects:
    """Collects the responses and appends of one call; tracks appends awaiting their outcome."""

    def __init__(self) -> None:
        self.now_ms = 0
        self._responses: list[tuple[RequestId, Message]] = []
        self._appends: list[Append] = []
        self._in_flight: dict[int, tuple[int, AppendDone | None]] = {}
        self._next_append_id = 1

    def respond(self, request_id: RequestId, response: Message) -> None:
        self._responses.append((request_id, response))

    def append(
        self,
        partition: int,
        records: list[CoordinatorRecord],
        on_done: AppendDone | None = None,
    ) -> None:
        """Emit an append; `on_done(error)` runs when the driver reports its outcome."""
        assert records, "an append needs records"
        append_id = self._next_append_id
        self._next_append_id += 1
        self._appends.append(Append(append_id, partition, tuple(records)))
        self._in_flight[append_id] = (partition, on_done)

    def complete(self, append_id: int, error: ErrorCode) -> None:
        """Run the completion of an append; an id already completed is ignored."""
        entry = self._in_flight.pop(append_id, None)
        if entry is not None and entry[1] is not None:
            entry[1](error)

    def in_flight(self, partition: int) -> list[int]:
        """Ids of the appends to `partition` whose outcome is not known yet, oldest first."""
        return [i for i, (p, _) in self._in_flight.items() if p == partition]

    def take(self, next_deadline_ms: int | None) -> Output:
        output = Output(self._responses, self._appends, next_deadline_ms)
        self._responses = []
        self._appends = []
        return output


def group_append_error(error: ErrorCode) -> ErrorCode:
    """The error a client gets when group metadata could not be written (Kafka's mapping)."""
    return _APPEND_ERRORS.get(error, error)


def offset_append_error(error: ErrorCode) -> ErrorCode:
    """The error a client gets when its offsets could not be written (Kafka's mapping)."""
    if error in _TOO_LARGE:
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    return _APPEND_ERRORS.get(error, error)


_TOO_LARGE = frozenset(
    {ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE, ErrorCode.INVALID_FETCH_SIZE}
)
_APPEND_ERRORS: dict[ErrorCode, ErrorCode] = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    **{code: ErrorCode.UNKNOWN_SERVER_ERROR for code in _TOO_LARGE},
}

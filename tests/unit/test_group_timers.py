"""The coordinator's deadline table."""

from __future__ import annotations

from tidelog.broker.groups.timers import Timers


def test_due_keys_come_earliest_first_and_rescheduling_replaces() -> None:
    timers = Timers()
    timers.schedule(("a",), 30)
    timers.schedule(("b",), 10)
    timers.schedule(("c",), 20)
    timers.schedule(("b",), 40)  # replaces 10
    timers.cancel(("c",))
    assert timers.next_deadline() == 30
    assert timers.pop_due(29) is None
    assert timers.pop_due(100) == ("a",)
    assert timers.pop_due(100) == ("b",)
    assert timers.pop_due(100) is None
    assert timers.next_deadline() is None


def test_superseded_entries_do_not_accumulate() -> None:
    timers = Timers()
    for i in range(10_000):
        timers.schedule(("session", str(i % 10)), i)
    assert len(timers._heap) <= 2 * 10 + 64 + 1
    assert [timers.deadline(("session", str(k))) for k in range(10)] == [
        9_990 + k for k in range(10)
    ]
    due = []
    while (key := timers.pop_due(10_000)) is not None:
        due.append(key)
    assert due == [("session", str(k)) for k in range(10)]

"""One replica's state: the high watermark rule and the ISR rules, kept in one place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.broker.partition.state import PartitionState, Role

LAG_MS = 30_000
"""replica.lag.time.max.ms"""
ALL = (0, 1, 2)


def leader(
    isr: tuple[int, ...] = ALL, min_isr: int = 1, end: int = 0, now: int = 0
) -> PartitionState:
    state = PartitionState(node_id=0, min_insync_replicas=min_isr)
    state.become_leader(
        leader_epoch=1, partition_epoch=0, replicas=ALL, isr=isr, log_end_offset=end, now_ms=now
    )
    return state


def commit(state: PartitionState, isr: tuple[int, ...], now: int = 0) -> None:
    """The controller committed `isr` in the next partition epoch; the leader learns it."""
    state.become_leader(
        leader_epoch=state.leader_epoch,
        partition_epoch=state.partition_epoch + 1,
        replicas=state.replicas,
        isr=isr,
        log_end_offset=state.log_end_offset,
        now_ms=now,
    )


def test_single_node_high_watermark_is_the_log_end_offset() -> None:
    state = leader(isr=(0,), end=5)
    assert state.high_watermark == 5
    assert state.on_log_end_offset(9) is True
    assert state.high_watermark == 9
    assert state.on_log_end_offset(9) is False


def test_high_watermark_is_the_lowest_end_over_the_isr_and_never_moves_back() -> None:
    state = leader()
    state.on_log_end_offset(10)
    assert state.high_watermark == 0
    assert state.on_follower_fetch(1, 6, 1) is False  # follower 2 is still at 0
    assert state.on_follower_fetch(2, 4, 1) is True
    assert state.high_watermark == 4
    state.on_follower_fetch(2, 8, 2)
    assert state.high_watermark == 6
    # A new ISR without the slow follower moves it on; a lower position never moves it back.
    commit(state, (0, 1))
    assert state.high_watermark == 6
    state.on_follower_fetch(1, 3, 3)
    assert state.high_watermark == 6


def test_high_watermark_waits_for_min_insync_replicas() -> None:
    state = leader(isr=(0,), min_isr=2, end=3)
    assert state.high_watermark == 0
    commit(state, (0, 1))
    state.on_follower_fetch(1, 3, 1)
    assert state.high_watermark == 3


def test_follower_takes_the_leaders_high_watermark_capped_by_its_own_end() -> None:
    state = PartitionState(node_id=1)
    state.become_follower(
        leader_id=0, leader_epoch=2, partition_epoch=0, replicas=(0, 1), isr=(0, 1),
        log_end_offset=4,
    )  # fmt: skip
    assert state.role is Role.FOLLOWER
    assert state.on_leader_high_watermark(9) is True and state.high_watermark == 4
    state.on_log_end_offset(7)
    state.on_leader_high_watermark(9)
    assert state.high_watermark == 7
    state.on_log_end_offset(5)  # truncated: the HW follows the log down
    assert state.high_watermark == 5


def test_epochs_never_go_back_and_new_epochs_forget_follower_positions() -> None:
    state = leader()
    state.on_follower_fetch(1, 5, 1)
    state.become_leader(
        leader_epoch=2, partition_epoch=1, replicas=ALL, isr=ALL, log_end_offset=5, now_ms=7
    )
    assert {r: p.log_end_offset for r, p in state.followers.items()} == {1: 0, 2: 0}
    assert {p.last_caught_up_ms for p in state.followers.values()} == {7}
    with pytest.raises(AssertionError):
        state.become_follower(
            leader_id=1, leader_epoch=1, partition_epoch=2, replicas=(0, 1), isr=(1,),
            log_end_offset=5,
        )  # fmt: skip


# ---- the ISR ---------------------------------------------------------------------------


def test_a_follower_behind_for_longer_than_the_lag_time_leaves_the_isr() -> None:
    state = leader(end=10, now=0)
    state.on_follower_fetch(1, 10, 5)  # caught up
    state.on_follower_fetch(2, 4, 5)  # behind, and never caught up since the epoch began
    assert state.isr_change(LAG_MS, LAG_MS, ALL) is None  # not yet past the lag time
    assert state.isr_change(LAG_MS + 1, LAG_MS, ALL) == (0, 1)
    assert state.pending_isr == (0, 1)
    # One change at a time, and the replica being removed still counts for the HW.
    assert state.isr_change(LAG_MS + 2, LAG_MS, ALL) is None
    assert state.maximal_isr == ALL and state.high_watermark == 4
    commit(state, (0, 1), now=LAG_MS + 3)
    assert state.pending_isr is None and state.isr == (0, 1)
    assert state.high_watermark == 10


def test_a_follower_at_the_leaders_end_is_never_lagging() -> None:
    state = leader(end=10)
    state.on_follower_fetch(1, 10, 1)
    state.on_follower_fetch(2, 10, 1)
    assert state.isr_change(10 * LAG_MS, LAG_MS, ALL) is None


def test_catching_up_with_the_leaders_end_at_the_previous_fetch_counts() -> None:
    state = leader(end=10)
    state.on_follower_fetch(1, 10, 1)
    state.on_follower_fetch(2, 6, 1000)  # the leader ended at 10 then
    state.on_log_end_offset(20)  # the leader moved on meanwhile
    state.on_follower_fetch(1, 20, 2000)
    state.on_follower_fetch(2, 10, 2000)  # reached where the leader was at its last fetch
    assert state.followers[2].last_caught_up_ms == 1000
    assert state.isr_change(1000 + LAG_MS, LAG_MS, ALL) is None
    assert state.isr_change(1001 + LAG_MS, LAG_MS, ALL) == (0, 1)  # 1 is at the end


def test_a_replica_joins_once_it_reaches_the_high_watermark_in_this_epoch() -> None:
    state = leader(isr=(0, 1), end=8)
    state.on_follower_fetch(1, 8, 1)
    assert state.high_watermark == 8
    state.on_follower_fetch(2, 5, 2)
    assert state.isr_change(3, LAG_MS, ALL) is None  # below the high watermark
    state.on_follower_fetch(2, 8, 4)
    assert state.isr_change(5, LAG_MS, eligible=(0, 1)) is None  # 2 is not eligible (fenced)
    assert state.isr_change(5, LAG_MS, ALL) == (0, 1, 2)
    # While the addition is pending it counts: the HW waits for replica 2 too.
    assert state.maximal_isr == (0, 1, 2)
    state.on_log_end_offset(12)
    state.on_follower_fetch(1, 12, 6)
    assert state.high_watermark == 8
    state.on_follower_fetch(2, 12, 7)
    assert state.high_watermark == 12


def test_a_replica_joins_only_past_the_start_of_the_leader_epoch() -> None:
    state = leader(isr=(0,), end=0)
    state.become_leader(
        leader_epoch=2, partition_epoch=1, replicas=ALL, isr=(0,), log_end_offset=6, now_ms=0
    )
    state.on_follower_fetch(1, 5, 1)  # its tail may be of another epoch: not yet
    assert state.high_watermark == 6
    assert state.isr_change(2, LAG_MS, ALL) is None
    state.on_follower_fetch(1, 6, 3)
    assert state.isr_change(4, LAG_MS, ALL) == (0, 1)


def test_a_refused_change_is_proposed_again_and_a_new_epoch_drops_it() -> None:
    state = leader(end=10)
    state.on_follower_fetch(1, 10, 1)
    assert state.isr_change(LAG_MS + 1, LAG_MS, ALL) == (0, 1)
    state.isr_change_failed()
    assert state.isr_change(LAG_MS + 2, LAG_MS, ALL) == (0, 1)
    state.become_leader(
        leader_epoch=2, partition_epoch=1, replicas=ALL, isr=ALL, log_end_offset=10,
        now_ms=LAG_MS + 3,
    )  # fmt: skip
    assert state.pending_isr is None
    assert state.isr_change(LAG_MS + 4, LAG_MS, ALL) is None  # a fresh lag time for each


def test_an_unclean_leader_proposes_its_isr_as_recovered_first() -> None:
    state = leader(isr=(0,), end=10)
    assert state.isr_change(1, LAG_MS, ALL) is None  # a clean leader: nothing is due
    state.recovering = True
    assert state.isr_change(2, LAG_MS, ALL) == (0,)
    assert state.isr_change(3, LAG_MS, ALL) is None  # one change at a time
    state.recovering = False  # the committed RECOVERED comes back with the image
    commit(state, (0,), now=4)
    assert state.isr_change(5, LAG_MS, ALL) is None
    # A replica that may join makes the first change an expansion, RECOVERED with it.
    state.recovering = True
    state.on_follower_fetch(1, 10, 6)
    assert state.isr_change(7, LAG_MS, ALL) == (0, 1)


def test_a_follower_proposes_nothing() -> None:
    state = PartitionState(node_id=1)
    state.become_follower(
        leader_id=0, leader_epoch=1, partition_epoch=0, replicas=ALL, isr=(0,),
        log_end_offset=0,
    )  # fmt: skip
    assert state.isr_change(10 * LAG_MS, LAG_MS, ALL) is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(("append", "fetch1", "fetch2", "isr", "commit", "fail")),
            st.integers(0, 50),
        ),
        max_size=60,
    )
)
def test_the_high_watermark_never_passes_an_isr_members_end_nor_moves_back(
    steps: list[tuple[str, int]],
) -> None:
    state = leader(min_isr=2)
    now = 0
    for action, amount in steps:
        now += amount * 1000
        before = state.high_watermark
        if action == "append":
            state.on_log_end_offset(state.log_end_offset + amount)
        elif action.startswith("fetch"):
            follower = int(action[-1])
            state.on_follower_fetch(follower, min(amount, state.log_end_offset), now)
        elif action == "isr":
            state.isr_change(now, LAG_MS, ALL)
        elif action == "commit" and state.pending_isr is not None:
            commit(state, state.pending_isr, now)
        elif action == "fail":
            state.isr_change_failed()
        assert state.high_watermark >= before
        assert state.node_id in state.maximal_isr
        if len(state.maximal_isr) >= state.min_insync_replicas:
            assert state.high_watermark <= min(state.committed_ends().values()) or (
                state.high_watermark == before
            )

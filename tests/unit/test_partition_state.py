"""One replica's state: the high watermark rule, kept in one place."""

from __future__ import annotations

import pytest

from tidelog.broker.partition.state import PartitionState, Role


def leader(isr: tuple[int, ...] = (0, 1, 2), min_isr: int = 1, end: int = 0) -> PartitionState:
    state = PartitionState(node_id=0, min_insync_replicas=min_isr)
    state.become_leader(
        leader_epoch=1, partition_epoch=0, replicas=(0, 1, 2), isr=isr, log_end_offset=end
    )
    return state


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
    assert state.on_follower_position(1, 6) is False  # follower 2 is still at 0
    assert state.on_follower_position(2, 4) is True
    assert state.high_watermark == 4
    state.on_follower_position(2, 8)
    assert state.high_watermark == 6
    # A new ISR without the slow follower moves it on; a lower position never moves it back.
    state.become_leader(
        leader_epoch=1, partition_epoch=1, replicas=(0, 1, 2), isr=(0, 1), log_end_offset=10
    )
    assert state.high_watermark == 6
    state.on_follower_position(1, 3)
    assert state.high_watermark == 6


def test_high_watermark_waits_for_min_insync_replicas() -> None:
    state = leader(isr=(0,), min_isr=2, end=3)
    assert state.high_watermark == 0
    state.become_leader(
        leader_epoch=1, partition_epoch=1, replicas=(0, 1, 2), isr=(0, 1), log_end_offset=3
    )
    state.on_follower_position(1, 3)
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
    state.on_follower_position(1, 5)
    state.become_leader(
        leader_epoch=2, partition_epoch=1, replicas=(0, 1, 2), isr=(0, 1, 2), log_end_offset=5
    )
    assert state.follower_log_end_offsets == {}
    with pytest.raises(AssertionError):
        state.become_follower(
            leader_id=1, leader_epoch=1, partition_epoch=2, replicas=(0, 1), isr=(1,),
            log_end_offset=5,
        )  # fmt: skip

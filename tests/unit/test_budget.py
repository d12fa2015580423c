from __future__ import annotations

import pytest

from watcher.core.budget import BudgetPolicy, blocked, full, observe, probing, take, wait_time

POLICY = BudgetPolicy(rate=10.0, burst=5, reserve=2)


def drain(state, now: float):  # type: ignore[no-untyped-def]
    taken = 0
    while True:
        state, ok = take(state, POLICY, now)
        if not ok:
            return state, taken
        taken += 1


def test_burst_then_rate() -> None:
    state, taken = drain(full(POLICY, 0.0), 0.0)
    assert taken == 5
    assert wait_time(state, POLICY, 0.0) == pytest.approx(0.1)
    state, taken = drain(state, 1.0)
    assert taken == 5  # refilled, capped at burst


def test_server_remaining_shrinks_the_bucket() -> None:
    state = observe(full(POLICY, 0.0), POLICY, 0.0, remaining=4, reset_in=10.0)
    _, taken = drain(state, 0.0)
    assert taken == 2  # 4 remaining, 2 reserved for other clients


def test_server_exhausted_blocks_until_reset_then_refills_from_there() -> None:
    state = observe(full(POLICY, 0.0), POLICY, 0.0, remaining=1, reset_in=7.5)
    assert wait_time(state, POLICY, 0.0) == pytest.approx(7.6)
    assert take(state, POLICY, 7.55)[1] is False  # no burst at the reset: ...
    state, ok = take(state, POLICY, 7.61)
    assert ok  # ... one token, whose answer will tell the server's remaining
    assert take(state, POLICY, 7.61)[1] is False


def test_429_blocks() -> None:
    state = blocked(full(POLICY, 0.0), 0.0, 3.0)
    assert take(state, POLICY, 2.9)[1] is False
    assert wait_time(state, POLICY, 1.0) == pytest.approx(2.1)
    assert take(state, POLICY, 3.1)[1] is True


def test_a_probing_bucket_starts_with_one_token() -> None:
    state = probing(POLICY, 0.0)
    state, ok = take(state, POLICY, 0.0)
    assert ok
    assert take(state, POLICY, 0.0)[1] is False
    _, taken = drain(state, 10.0)
    assert taken == 5  # then the usual refill up to the burst


def test_observe_without_counters_changes_nothing() -> None:
    state = full(POLICY, 0.0)
    assert observe(state, POLICY, 0.0, remaining=None, reset_in=None) == state


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="rate"):
        BudgetPolicy(rate=0, burst=1)

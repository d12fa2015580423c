from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.schedule import (
    Changed,
    Failed,
    Finished,
    Outcome,
    Parked,
    SchedulePolicy,
    Unchanged,
    initial_state,
    next_delay,
)

POLICY = SchedulePolicy(min_interval=2.0, max_interval=300.0, backoff=1.5, jitter=0.1)


def test_change_polls_again_within_min_interval() -> None:
    state, delay = next_delay(initial_state(POLICY), Changed(), POLICY, random.Random(1))
    assert delay is not None
    assert 1.8 <= delay <= 2.0
    assert state.interval == 2.0


def test_idle_grows_geometrically_to_max() -> None:
    rng = random.Random(2)
    state = initial_state(POLICY)
    intervals = []
    for _ in range(20):
        state, delay = next_delay(state, Unchanged(), POLICY, rng)
        assert delay is not None
        assert delay <= state.interval
        intervals.append(state.interval)
    assert intervals[:3] == pytest.approx([3.0, 4.5, 6.75])
    assert intervals[-1] == 300.0
    state, delay = next_delay(state, Changed(), POLICY, rng)
    assert state.interval == 2.0


def test_errors_back_off_exponentially_with_full_jitter_and_a_cap() -> None:
    rng = random.Random(3)
    state = initial_state(POLICY)
    caps = []
    for _ in range(12):
        state, delay = next_delay(state, Failed(), POLICY, rng)
        assert delay is not None
        cap = min(300.0, 2.0 * 2**state.errors)
        assert 2.0 <= delay <= cap
        caps.append(cap)
    assert caps[-1] == 300.0
    state, _ = next_delay(state, Changed(), POLICY, rng)
    assert state.errors == 0


def test_retry_after_is_honoured_even_beyond_max_interval() -> None:
    _, delay = next_delay(initial_state(POLICY), Failed(retry_after=30.0), POLICY, random.Random(4))
    assert delay is not None
    assert delay >= 30.0
    _, delay = next_delay(
        initial_state(POLICY), Failed(retry_after=900.0), POLICY, random.Random(4)
    )
    assert delay == 900.0


def test_permanent_errors_retry_slowly() -> None:
    _, delay = next_delay(initial_state(POLICY), Failed(permanent=True), POLICY, random.Random(5))
    assert delay is not None
    assert 270.0 <= delay <= 300.0


def test_terminal_stops_and_parked_polls_at_max() -> None:
    assert next_delay(initial_state(POLICY), Finished(), POLICY, random.Random())[1] is None
    _, delay = next_delay(initial_state(POLICY), Parked(), POLICY, random.Random(6))
    assert delay is not None
    assert 270.0 <= delay <= 300.0


def test_wake_hint_sleeps_until_due_within_bounds() -> None:
    assert (
        next_delay(initial_state(POLICY), Unchanged(wake_in=60.0), POLICY, random.Random())[1]
        == 60.0
    )
    assert (
        next_delay(initial_state(POLICY), Unchanged(wake_in=0.0), POLICY, random.Random())[1] == 2.0
    )
    assert (
        next_delay(initial_state(POLICY), Unchanged(wake_in=9999.0), POLICY, random.Random())[1]
        == 300.0
    )


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        SchedulePolicy(min_interval=10, max_interval=5)
    with pytest.raises(ValueError, match="backoff"):
        SchedulePolicy(backoff=0.5)


outcomes = st.one_of(
    st.just(Changed()),
    st.just(Unchanged()),
    st.builds(Failed, retry_after=st.none()),
    st.just(Parked()),
)


@given(st.lists(outcomes, max_size=60), st.integers(0, 2**32))
def test_delays_always_within_policy_bounds(sequence: list[Outcome], seed: int) -> None:
    """Whatever happens, a delay is never shorter than min*(1-jitter) nor longer than max."""
    rng = random.Random(seed)
    state = initial_state(POLICY)
    for outcome in sequence:
        state, delay = next_delay(state, outcome, POLICY, rng)
        assert delay is not None
        assert POLICY.min_interval * (1 - POLICY.jitter) <= delay <= POLICY.max_interval
        assert POLICY.min_interval <= state.interval <= POLICY.max_interval


def test_a_long_quiet_subject_is_asked_again_in_proportion_to_its_quiet() -> None:
    policy = SchedulePolicy(min_interval=2.0, max_interval=300.0, jitter=0.0)
    rng = random.Random(1)
    state = initial_state(policy)
    # Quiet for 100 s: half of that, not 2 s x 1.5.
    state, delay = next_delay(state, Unchanged(quiet_for=100.0), policy, rng)
    assert delay == 50.0
    # Quiet for a day: capped at max_interval.
    _, delay = next_delay(state, Unchanged(quiet_for=86400.0), policy, rng)
    assert delay == 300.0
    # Changed moments ago: still min_interval, for linger x min_interval (8 s) ...
    _, delay = next_delay(initial_state(policy), Unchanged(quiet_for=7.0), policy, rng)
    assert delay == 2.0
    # ... then the geometric growth rules.
    _, delay = next_delay(initial_state(policy), Unchanged(quiet_for=9.0), policy, rng)
    assert delay == 4.5
    # A change still resets to min_interval, however long the quiet was.
    _, delay = next_delay(state, Changed(), policy, rng)
    assert delay == 2.0

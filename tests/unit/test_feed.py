"""The push-feed state machine: every transition, as data."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.feed import (
    Connect,
    Delivering,
    Ended,
    Enqueue,
    FallBack,
    FeedPolicy,
    FeedState,
    Input,
    InvalidTransition,
    Phase,
    Refused,
    Release,
    Sleep,
    Start,
    Stop,
    StretchPolls,
    Wake,
    Want,
    advance,
)
from watcher.core.health import Problem, ProblemKind

POLICY = FeedPolicy(retry_after=600.0, transient_retry=30.0)
DOWN = Problem(ProblemKind.UNREACHABLE, "connection refused")
GONE = Problem(ProblemKind.NOT_FOUND, "HTTP 404")


def run(state: FeedState, *inputs: Input) -> tuple[FeedState, list[object]]:
    rng = random.Random(1)
    actions: list[object] = []
    for event in inputs:
        state, done = advance(state, event, POLICY, rng)
        actions += [type(a).__name__ for a in done]
    return state, actions


def test_a_feed_that_delivers_stretches_the_polls_and_reconnects_after_a_clean_end() -> None:
    state, actions = run(
        FeedState(), Want(0), Start(), Delivering(), Ended(10, clean=True), Delivering()
    )
    assert state == FeedState(Phase.STREAMING, 0, 0.0)
    assert actions == ["Enqueue", "Connect", "StretchPolls", "Connect", "StretchPolls"]


def test_passing_failures_back_off_then_fall_back_for_a_short_while() -> None:
    state, actions = run(FeedState(), Want(0), Start(), Refused(1, DOWN), Wake())
    assert state.phase is Phase.CONNECTING
    assert state.failures == 1
    assert actions == ["Enqueue", "Connect", "Sleep", "Connect"]
    state, actions = run(state, Ended(2, clean=False, problem=DOWN), Wake(), Refused(3, DOWN))
    assert state.phase is Phase.POLLING
    assert 3 + 15 <= state.retry_at <= 3 + 30  # soon: it was a blip
    assert actions == ["Sleep", "Connect", "FallBack", "Release"]


def test_a_refusal_falls_back_at_once_for_retry_after() -> None:
    rng = random.Random(1)
    connecting = FeedState(Phase.CONNECTING)
    state, actions = advance(connecting, Refused(5, GONE), POLICY, rng)
    assert state == FeedState(Phase.POLLING, 0, 605.0)
    assert actions == (FallBack(GONE, 600.0), Release())
    # Asked again before retry_at: nothing happens; after it: a new feed.
    assert advance(state, Want(604), POLICY, rng) == (state, ())
    assert advance(state, Want(605), POLICY, rng)[1] == (Enqueue(),)


def test_an_empty_close_counts_as_a_failure() -> None:
    state, actions = run(FeedState(Phase.CONNECTING), Ended(1, clean=False))
    assert (state.phase, state.failures, actions) == (Phase.BACKING_OFF, 1, ["Sleep"])


def test_stop_returns_to_polling_from_every_working_phase() -> None:
    rng = random.Random(1)
    for phase in (Phase.CONNECTING, Phase.STREAMING, Phase.BACKING_OFF):
        state, actions = advance(FeedState(phase, 2, 7.0), Stop(), POLICY, rng)
        assert (state, actions) == (FeedState(Phase.POLLING, 0, 7.0), (Release(),))
    # Queued, no worker held it: nothing to release (also when the queue was full).
    assert advance(FeedState(Phase.QUEUED), Stop(), POLICY, rng) == (FeedState(), ())
    assert advance(FeedState(), Stop(), POLICY, rng) == (FeedState(), ())
    crashed, actions = advance(FeedState(Phase.STREAMING), Stop(9, crashed=True), POLICY, rng)
    assert crashed.retry_at == 609.0
    assert actions == (FallBack(None, 600.0), Release())


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.POLLING, Start()),
        (Phase.POLLING, Delivering()),
        (Phase.QUEUED, Ended(0, clean=True)),
        (Phase.STREAMING, Refused(0, DOWN)),
        (Phase.CONNECTING, Wake()),
    ],
)
def test_inputs_a_phase_does_not_expect_are_bugs(phase: Phase, event: Input) -> None:
    with pytest.raises(InvalidTransition):
        advance(FeedState(phase), event, POLICY, random.Random(1))


INPUTS = st.sampled_from(
    [
        Want(100),
        Start(),
        Delivering(),
        Ended(100, clean=True),
        Ended(100, clean=False, problem=DOWN),
        Refused(100, DOWN),
        Refused(100, GONE),
        Wake(),
        Stop(),
    ]
)


@given(st.lists(INPUTS, max_size=40))
def test_any_valid_sequence_keeps_the_invariants(inputs: list[Input]) -> None:
    """Whatever happens: failures stay under the cap, only POLLING waits for retry_at,
    and every connection is asked for by exactly one Connect."""
    rng = random.Random(3)
    state = FeedState()
    for event in inputs:
        try:
            state, actions = advance(state, event, POLICY, rng)
        except InvalidTransition:
            continue
        assert state.failures < POLICY.max_failures
        connects = sum(isinstance(a, Connect) for a in actions)
        assert connects <= 1
        assert connects == 0 or state.phase is Phase.CONNECTING
        if any(isinstance(a, FallBack) for a in actions):
            assert state.phase is Phase.POLLING
            assert actions[-1] == Release()
        for action in actions:
            assert isinstance(action, Enqueue | Connect | StretchPolls | Sleep | FallBack | Release)

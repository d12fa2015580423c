from __future__ import annotations

from watcher.core.health import (
    HealthState,
    Problem,
    ProblemKind,
    counts_as_seen,
    on_failure,
    on_success,
)

UNREACHABLE = Problem(ProblemKind.UNREACHABLE, "HTTP 500 from GET /x", 500)
AUTH = Problem(ProblemKind.AUTH_FAILED, "HTTP 401 from GET /x", 401)


def test_transient_problem_reported_once_after_threshold() -> None:
    state = HealthState()
    reports = []
    for _ in range(6):
        state, report = on_failure(state, UNREACHABLE, threshold=3)
        reports.append(report)
    assert reports == [None, None, ProblemKind.UNREACHABLE, None, None, None]
    assert state.failures == 6


def test_definitive_problem_reported_at_once() -> None:
    state, report = on_failure(HealthState(), AUTH, threshold=3)
    assert report is ProblemKind.AUTH_FAILED
    state, report = on_failure(state, AUTH, threshold=3)
    assert report is None


def test_a_different_problem_is_reported_too() -> None:
    state, _ = on_failure(HealthState(), AUTH, threshold=3)
    state, report = on_failure(state, Problem(ProblemKind.NOT_FOUND, "404"), threshold=3)
    assert report is ProblemKind.NOT_FOUND
    assert state.episode == 1


def test_recovery_reported_once_and_only_after_a_report() -> None:
    state, _ = on_failure(HealthState(), UNREACHABLE, threshold=3)
    state, cleared = on_success(state)
    assert cleared is None  # one blip, never reported, nothing to clear
    for _ in range(3):
        state, _ = on_failure(state, UNREACHABLE, threshold=3)
    state, cleared = on_success(state)
    assert cleared is ProblemKind.UNREACHABLE
    state, cleared = on_success(state)
    assert cleared is None
    assert state.healthy


def test_episodes_count_separate_outages() -> None:
    state = HealthState()
    for _ in range(2):
        state, _ = on_failure(state, AUTH, threshold=3)
        state, _ = on_success(state)
    assert state.episode == 2


def test_the_first_pass_counts_a_watch_seen_or_explained_not_one_still_retrying() -> None:
    assert counts_as_seen(HealthState())
    passing = Problem(ProblemKind.RATE_LIMITED, "429")
    retrying, _ = on_failure(HealthState(), passing, threshold=3)
    assert not counts_as_seen(retrying)  # no baseline yet, nothing reported
    refused, _ = on_failure(HealthState(), Problem(ProblemKind.AUTH_FAILED, "401"), threshold=3)
    assert counts_as_seen(refused)  # the operator has the answer

"""A watch's own health: when to say "I cannot see", and when to say it is over.

Definitive problems (credentials refused, the thing does not exist) are reported
at once; transient ones (server errors, timeouts, malformed bodies, rate limits)
only after ``threshold`` consecutive failures, so one blip pages nobody. Each
problem is reported once, and its end once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = ["HealthState", "Problem", "ProblemKind", "counts_as_seen", "on_failure", "on_success"]


class ProblemKind(StrEnum):
    """Why a watch cannot see upstream."""

    AUTH_FAILED = "auth_failed"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    UNREACHABLE = "unreachable"
    BAD_RESPONSE = "bad_response"
    BAD_REQUEST = "bad_request"

    @property
    def definitive(self) -> bool:
        """Whether one occurrence is enough to report it."""
        return self in _DEFINITIVE


_DEFINITIVE = frozenset({ProblemKind.AUTH_FAILED, ProblemKind.NOT_FOUND, ProblemKind.BAD_REQUEST})


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed fetch, classified. ``message`` is safe to show (no secrets)."""

    kind: ProblemKind
    message: str
    status_code: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class HealthState:
    """Consecutive failures so far and the problem already reported, if any."""

    failures: int = 0
    reported: ProblemKind | None = None
    last_problem: Problem | None = None
    episode: int = 0

    @property
    def healthy(self) -> bool:
        """True when the last fetch succeeded."""
        return self.failures == 0


def on_failure(
    state: HealthState, problem: Problem, threshold: int
) -> tuple[HealthState, ProblemKind | None]:
    """Record a failure; return the problem to report now, or ``None``."""
    failures = state.failures + 1
    new = replace(state, failures=failures, last_problem=problem)
    due = problem.kind.definitive or failures >= threshold
    if due and state.reported != problem.kind:
        episode = state.episode + (1 if state.reported is None else 0)
        return replace(new, reported=problem.kind, episode=episode), problem.kind
    return new, None


def on_success(state: HealthState) -> tuple[HealthState, ProblemKind | None]:
    """Record a success; return the problem that just cleared, or ``None``."""
    cleared = state.reported
    if state.failures == 0 and cleared is None and state.last_problem is None:
        return state, None  # the usual case: nothing to clear, nothing to copy
    return replace(state, failures=0, reported=None, last_problem=None), cleared


def counts_as_seen(health: HealthState) -> bool:
    """Whether the first pass counts a watch as done: it was seen, or it reported why not.

    A watch whose first polls meet a passing error (a 429, a 503) is not done yet:
    until it has a baseline, changes upstream would be taken for the baseline; a
    definitive problem (401, 404) or a reported outage is an answer the operator has.
    """
    return health.healthy or health.reported is not None

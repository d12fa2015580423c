"""A per-source request budget: a token bucket steered by the server's own counters.

Pure: every function takes ``now`` (monotonic seconds) and returns a new state.
The local bucket keeps the watcher under its configured rate; the server's
``x-ratelimit-remaining`` / ``x-ratelimit-reset`` pull it lower when the
environment's shared budget runs short (other clients use it too), and a 429
blocks the bucket until the reset the server names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "BudgetPolicy",
    "BudgetState",
    "blocked",
    "full",
    "observe",
    "probing",
    "refill",
    "take",
    "wait_time",
]


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """``rate`` tokens per second, at most ``burst`` stored.

    ``reserve`` is how many of the server's remaining requests to leave for
    other clients of the same environment; below it the watcher waits for the
    reset.
    """

    rate: float
    burst: float
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Tokens in the bucket at ``updated``, and a hard block until ``blocked_until``."""

    tokens: float
    updated: float
    blocked_until: float = 0.0


def full(policy: BudgetPolicy, now: float) -> BudgetState:
    """A bucket that starts full."""
    return BudgetState(tokens=policy.burst, updated=now)


def probing(policy: BudgetPolicy, now: float) -> BudgetState:
    """A bucket that starts with one token: the first answer says where the server stands.

    Without it, a daemon starting with many watches would spend its whole burst
    before it learns that the environment's budget is nearly used up.
    """
    return BudgetState(tokens=min(1.0, policy.burst), updated=now)


def refill(state: BudgetState, policy: BudgetPolicy, now: float) -> BudgetState:
    """Add the tokens earned since ``state.updated``."""
    if now <= state.updated:
        return state
    tokens = min(policy.burst, state.tokens + (now - state.updated) * policy.rate)
    return replace(state, tokens=tokens, updated=now)


def wait_time(state: BudgetState, policy: BudgetPolicy, now: float) -> float:
    """Seconds until one token can be taken (0 when one can be taken now)."""
    state = refill(state, policy, now)
    block = max(0.0, state.blocked_until - now)
    if state.tokens >= 1:
        return block
    # Tokens accrue from ``updated`` on, which lies in the future after a block.
    accrual = max(0.0, state.updated - now) + (1 - state.tokens) / policy.rate
    return max(block, accrual)


def take(state: BudgetState, policy: BudgetPolicy, now: float) -> tuple[BudgetState, bool]:
    """Take one token if one is available now."""
    state = refill(state, policy, now)
    if now < state.blocked_until or state.tokens < 1:
        return state, False
    return replace(state, tokens=state.tokens - 1), True


def observe(
    state: BudgetState,
    policy: BudgetPolicy,
    now: float,
    *,
    remaining: int | None,
    reset_in: float | None,
) -> BudgetState:
    """Fold the server's counters into the bucket.

    When the server has fewer requests left than the bucket holds, the bucket
    shrinks to match; at or below the reserve, it waits for the reset.
    """
    state = refill(state, policy, now)
    if remaining is None:
        return state
    usable = remaining - policy.reserve
    if usable <= 0:
        until = now + max(0.0, reset_in if reset_in is not None else 1.0 / policy.rate)
        return _block(state, now, until)
    if usable < state.tokens:
        return replace(state, tokens=float(usable))
    return state


def blocked(state: BudgetState, now: float, until: float) -> BudgetState:
    """The server said 429: take no request before ``until``."""
    return _block(state, now, until)


def _block(state: BudgetState, now: float, until: float) -> BudgetState:
    # Refill starts at the reset, not now: the server's window holds fewer tokens
    # than ours would have earned meanwhile, and the first answer after the reset
    # (its x-ratelimit-remaining) sets the pace again.
    until = max(state.blocked_until, until)
    return replace(
        state,
        tokens=min(state.tokens, 0.0),
        blocked_until=until,
        updated=max(state.updated, now, until),
    )

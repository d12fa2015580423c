"""When to try a failed message again, and when to give up. Pure: time and randomness
are given.

Each message owed to a notifier keeps its own schedule, so one that keeps failing
(a body the service refuses, a send that times out) is retried on its own while
the notifier's other messages go out. The backoff is exponential with full
jitter (AWS's "exponential backoff and jitter"; tenacity's
``wait_random_exponential``): after the n-th failed attempt the next one waits a
uniform draw from ``[0, min(max_backoff, initial_backoff * 2**(n-1))]``, but at
least a tenth of that ceiling, so a message that failed is never retried in the
same breath. Retries stop after ``max_attempts`` attempts or once ``retry_for``
seconds have passed since the first one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "next_attempt"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Caps of one message's retries: by count and by time; the backoff's range."""

    max_attempts: int = 20
    retry_for: float = 900.0
    initial_backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.retry_for <= 0:
            raise ValueError("need max_attempts >= 1 and retry_for > 0")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")


def next_attempt(
    policy: RetryPolicy,
    attempts: int,
    first_at: float,
    now: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float | None:
    """When to attempt again after ``attempts`` failed attempts (the first at
    ``first_at``, the last ending at ``now``); None when the policy gives up.

    ``retry_after`` is the receiver's own word (a 429's Retry-After): sooner would be
    refused again, so it replaces the backoff, within the time cap.
    """
    if attempts >= policy.max_attempts:
        return None
    elapsed = now - first_at
    if elapsed >= policy.retry_for:
        return None
    if retry_after is not None:
        return now + max(0.0, min(retry_after, policy.retry_for - elapsed))
    ceiling = min(policy.max_backoff, policy.initial_backoff * 2.0 ** min(attempts - 1, 60))
    delay = max(ceiling / 10, rng.uniform(0, ceiling))
    # The last retry comes no later than the time cap, not after it.
    return now + min(delay, policy.retry_for - elapsed)

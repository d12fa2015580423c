"""The gate every request to one upstream passes: its budget and its concurrency cap."""

from __future__ import annotations

import anyio

from watcher.clock import Clock
from watcher.core import budget
from watcher.core.budget import BudgetPolicy
from watcher.core.durations import format_duration
from watcher.core.health import Problem, ProblemKind
from watcher.sources.errors import SourceError

__all__ = ["SourceGate", "Ticket"]


class SourceGate:
    """Request budget (token bucket fed by the server's counters) and a concurrency cap.

    The scheduler asks :meth:`try_take` before it starts a poll, so that when the
    budget is short it can pick which watch is served; further requests of the
    same poll (stream reads, list pages) wait in :meth:`acquire`.
    """

    def __init__(
        self,
        name: str,
        policy: BudgetPolicy,
        *,
        max_concurrency: int,
        clock: Clock,
        max_wait: float = 600.0,
    ) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self.max_wait = max_wait
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.slot = _Slot(self.limiter)
        """``async with gate.slot``: the concurrency cap, for one request."""
        self._state = budget.probing(policy, clock.now())
        self.requests = 0
        self.rate_limited = 0

    def try_take(self) -> bool:
        """Take a token if one is available right now."""
        self._state, ok = budget.take(self._state, self.policy, self.clock.now())
        if ok:
            self.requests += 1
        return ok

    def wait_time(self) -> float:
        """Seconds until a token will be available."""
        return budget.wait_time(self._state, self.policy, self.clock.now())

    async def acquire(self) -> None:
        """Wait for a token, at most ``max_wait`` seconds in all."""
        deadline = self.clock.now() + self.max_wait
        while not self.try_take():
            now = self.clock.now()
            if now >= deadline:
                raise SourceError(
                    Problem(
                        ProblemKind.RATE_LIMITED,
                        f"{self.name}: request budget exhausted for {format_duration(self.max_wait)}",
                    )
                )
            await self.clock.sleep(min(max(self.wait_time(), 0.001), deadline - now))

    def observe(self, *, remaining: int | None, reset_in: float | None) -> None:
        """Fold the server's rate-limit counters into the budget."""
        self._state = budget.observe(
            self._state, self.policy, self.clock.now(), remaining=remaining, reset_in=reset_in
        )

    def block(self, seconds: float) -> None:
        """The server answered 429: send nothing for ``seconds``."""
        self.rate_limited += 1
        now = self.clock.now()
        self._state = budget.blocked(self._state, now, now + seconds)


class _Slot:
    """The limiter, taken without a trip through the event loop when a slot is free
    (``async with limiter`` yields once even then: 3% of a poll's CPU)."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self._limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._limiter.release()


class Ticket:
    """The budget of one poll: tokens already taken for it, then the gate's."""

    __slots__ = ("gate", "prepaid")

    def __init__(self, gate: SourceGate, prepaid: int = 0) -> None:
        self.gate = gate
        self.prepaid = prepaid

    async def spend(self) -> None:
        """Pay for one request."""
        if self.prepaid > 0:
            self.prepaid -= 1
            return
        await self.gate.acquire()

"""The Trigger.dev environment's realtime feed: one long-poll connection for every run.

The feed's life runs on the push-feed state machine (``core/feed.py``); this worker
performs its actions. A session reads the environment's shape of runs created in the
window (``core/shape.py`` folds it), then long-polls for changes:

- A followed run (a ``trigger_run`` watch in ``mode: auto``, or a run a
  ``trigger_runs`` watch follows) that the shape holds is *covered*: its polls
  stretch to ``realtime_cross_check``. A run the shape does not hold (created before
  the window, or left out by a capped feed) is polled as before.
- A live row that moved a covered run is read by ``core/pushed.py``: a change the row
  tells in full (``EXECUTING`` to ``WAITING`` and back) is applied as a poll's result
  would be, at no ``/api`` cost; one it cannot (an outcome, a retry, a new attempt)
  polls the run now, which reads the error, the attempt and the version. Either way
  the events are the very events polling makes, with the same ids.
- A new run in the shape starts an early discovery pass of the ``trigger_runs``
  watches whose filter names its task or tags.
- 409 (the shape was reset) re-reads it from offset ``-1``: runs are re-covered, and no
  event repeats, since a poll reports only a change from what the watch last saw.
- The session ends cleanly every ``realtime_rotate`` (a fresh snapshot moves the
  window); a refusal (401/403/404), or failures three times over, falls back: every
  covered run is polled at its own pace again until ``realtime_retry_after``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, assert_never

import anyio
import structlog
from anyio.abc import TaskStatus

from watcher.clock import Clock
from watcher.config.model import TriggerSourceConfig
from watcher.core.cross_check import judge, plan_check
from watcher.core.feed import (
    Action,
    Connect,
    Delivering,
    Ended,
    Enqueue,
    FallBack,
    FeedPolicy,
    FeedState,
    Input,
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
from watcher.core.health import Problem
from watcher.core.shape import ShapeFold
from watcher.daemon.realtime_host import (
    Lister,
    RealtimeHost,
    known_snapshot,
)
from watcher.daemon.realtime_rows import FeedRows
from watcher.daemon.realtime_shapes import ExtraShapes
from watcher.daemon.runtime import WatchRuntime
from watcher.sources.errors import SourceError
from watcher.sources.trigger import ListFilter
from watcher.sources.trigger_realtime import ShapeGone, TriggerRealtime, run_of_row

__all__ = ["RealtimeFeed", "RealtimeHost"]

log = structlog.get_logger("watcher.realtime")

SAVE_EVERY = 60.0
"""Seconds between writes of the feed's position to the state file (and one at exit)."""


def _window(seconds: float) -> str:
    """``createdAt`` as the API takes it (whole minutes, at least one)."""
    return f"{max(1, int(seconds // 60))}m"


class RealtimeFeed(FeedRows):
    """The realtime feed of one Trigger.dev environment (one base URL and key)."""

    def __init__(
        self,
        host: RealtimeHost,
        client: TriggerRealtime,
        config: TriggerSourceConfig,
        *,
        clock: Clock,
        rng: random.Random,
        saved: Mapping[str, Any] | None = None,
        save: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
        lister: Lister | None = None,
        environment: str | None = None,
    ) -> None:
        self.host = host
        self.lister = lister
        self.client = client
        self.config = config
        self.clock = clock
        self.rng = rng
        self.state = FeedState()
        self.policy = FeedPolicy(retry_after=config.realtime_retry_after)
        self.fold = ShapeFold(keep=self._keeps, trail="status")
        self.extra = ExtraShapes(self, client, config, clock=clock, rng=rng)
        self.covered: set[str] = set()
        self._wanted = anyio.Event()
        self._followed_ids: set[str] = set()
        self._early: dict[str, float] = {}
        self._save = save
        self._saved_at = clock.now()
        # A restart resumes where the feed stood (a catch-up read, no snapshot) when the
        # state file kept it and the server still has the shape; a 409 re-snapshots.
        self._resume = saved is not None and self.fold.restore(saved)
        if self._resume:
            log.info("realtime feed resumes from the state file", runs=len(self.fold.rows))
        self.sessions = 0
        self.fallbacks = 0
        self.changes = 0
        """Rows that made a covered run be polled at once."""
        self.applied = 0
        """Rows applied to a covered run directly, as a poll's result (no ``/api`` read)."""
        self.checks = 0
        """Batched cross-checks made (each one list pass)."""
        self.baselines = 0
        """Runs first seen in a row (no ``/api`` read): the snapshot is their first poll."""
        self.environment = environment
        self._deferred: set[str] = set()
        """Runs whose first poll waits for the first snapshot (which may make it needless)."""
        self._taken: dict[str, WatchRuntime] = {}
        self._taken_ready = anyio.Event()
        self._first_snapshot = True
        self._snapshot_read = anyio.Event()

    # -- the state machine ------------------------------------------------------------------

    def _advance(self, event: Input) -> tuple[Action, ...]:
        self.state, actions = advance(self.state, event, self.policy, self.rng)
        return actions

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed while runs want it, until cancelled."""
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                if self.lister is not None:
                    tg.start_soon(self._cross_checks)
                tg.start_soon(self.extra.run)
                tg.start_soon(self._judge_taken)
                await self._follow()
        finally:
            self._uncover_all(poll=False)
            with anyio.CancelScope(shield=True):
                await self._keep()

    async def _follow(self) -> None:
        while True:
            if not self.wanted():
                if self._first_snapshot:
                    self._first_snapshot_done()  # nothing to read it for (finished runs)
                self._wanted = anyio.Event()
                await self._wanted.wait()
                continue
            actions = self._advance(Want(self.clock.now()))
            if not actions:  # falling back: polled until retry_at
                await anyio.sleep(max(1.0, self.state.retry_at - self.clock.now()))
                continue
            assert actions == (Enqueue(),), actions
            await self._perform(self._advance(Start()))

    async def _perform(self, actions: tuple[Action, ...]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            match action:
                case Connect():
                    pending += await self._session()
                case Sleep(seconds=seconds):
                    await anyio.sleep(seconds)
                    pending += self._advance(Wake())
                case StretchPolls():  # pragma: no cover - the session performs Delivering's
                    self._cover(self.followed())
                case FallBack(problem=problem, wait=wait):
                    self.fallbacks += 1
                    self._uncover_all(poll=True)
                    log.warning(
                        "realtime feed unavailable; the Trigger.dev runs are polled",
                        error=problem.message if problem else "kept failing",
                        retry_in=round(wait),
                    )
                case Release():
                    self._uncover_all(poll=True)
                case Enqueue():  # pragma: no cover - only Want asks for it
                    raise AssertionError("Enqueue inside the feed")
                case _:
                    assert_never(action)

    # -- the cross-check ------------------------------------------------------------------------

    async def _cross_checks(self) -> None:
        while True:
            versions = False
            with anyio.move_on_after(self.config.realtime_cross_check):
                await self._snapshot_read.wait()
                versions = True
            self._snapshot_read = anyio.Event()
            try:
                await self.cross_check(versions=versions)
            except SourceError as exc:
                log.warning(
                    "realtime cross-check failed; the covered runs keep their own polls",
                    problem=exc.problem.kind.value,
                    error=exc.problem.message,
                )

    async def cross_check(self, *, versions: bool = False) -> None:
        """Confirm the covered runs against ``GET /api/v1/runs`` (``core/cross_check.py``);
        with ``versions``, only the started runs a snapshot baselined without their
        version (rows do not carry it), which the list gives them."""
        assert self.lister is not None
        created: dict[str, datetime] = {}
        for fold in self._folds():
            for row in fold.rows.values():
                run = run_of_row(row)
                if run is not None and run.created_at is not None:
                    created[run.run_id] = run.created_at
        due = {
            rt.subject_id: (rt, known)
            for rt in self.followed()
            if rt.key in self.covered
            and (known := known_snapshot(rt)) is not None
            and rt.subject_id in created
            and (not versions or (known.version is None and known.started_at is not None))
        }
        plan = plan_check([created[r] for r in due], self.fold.size, self.clock.wall())
        if plan is None:
            return
        self.checks += 1
        listed = await self.lister(ListFilter(period=plan.period), plan.max_pages)
        verdict = judge({run_id: known for run_id, (_, known) in due.items()}, listed.runs)
        found = {run.run_id: run for run in listed.runs}
        for run_id in verdict.confirmed:
            self.host.confirm(due[run_id][0], found[run_id])
        for run_id in verdict.moved:
            self.host.poll_soon(due[run_id][0])
        log.info(
            "realtime versions listed" if versions else "realtime cross-check",
            pages=listed.pages,
            confirmed=len(verdict.confirmed),
            moved=len(verdict.moved),
            unseen=len(verdict.unseen),
        )

    # -- one session ------------------------------------------------------------------------

    async def _session(self) -> tuple[Action, ...]:
        """Snapshot, then long polls, until the rotation, a failure or nothing to follow."""
        self.sessions += 1
        self._followed_ids = {rt.subject_id for rt in self.followed()}
        if not self._resume:
            self.fold.reset()
        self._resume = False
        window = _window(self.config.realtime_window)
        started = self.clock.now()
        try:
            while not self.fold.synced:
                await self._read(live=False, window=window)
        except SourceError as exc:
            self._first_snapshot_done()
            return self._advance(Refused(self.clock.now(), exc.problem))
        followed = self.followed()
        for action in self._advance(Delivering()):
            assert isinstance(action, StretchPolls), action
            self._cover(followed, check=False)  # checked below, every one of them
        # Every snapshot is a cross-check of every run it holds, at no /api cost: a run
        # its watch has not seen takes its row as its first poll; one whose row differs
        # from what its watch last saw is polled now. After covering: covering moves a
        # run's next poll to the cross-check.
        await self._changed(self.fold.rows.values())
        self._first_snapshot_done()
        self._snapshot_read.set()  # the runs it baselined get their versions listed
        self.extra.reset_budget()
        self.extra.poke()  # the runs it left out get extra shapes
        log.info("realtime feed connected", runs=len(self.fold.rows), covered=len(self.covered))
        try:
            while self.clock.now() - started < self.config.realtime_rotate:
                followed = self.followed()
                if not self.wanted(followed):
                    return self._advance(Stop(self.clock.now()))
                # Live once synced; after a reset (409) the snapshot is read again first.
                rows = await self._read(live=self.fold.synced, window=window)
                await self._changed(rows, self.fold.trails)
                self._cover(followed)
                if self.clock.now() - self._saved_at >= SAVE_EVERY:
                    await self._keep()
        except SourceError as exc:
            return self._ended(exc.problem)
        # Rotation: a fresh snapshot moves the window; covered runs stay covered meanwhile.
        return self._advance(Ended(self.clock.now(), clean=True))

    async def _keep(self) -> None:
        """Write where the feed stands to the state file (it has one, and a snapshot)."""
        self._saved_at = self.clock.now()
        if self._save is not None and self.fold.synced and not self.fold.cursor.initial:
            await self._save(self.fold.to_dict())

    def _ended(self, problem: Problem) -> tuple[Action, ...]:
        log.info("realtime feed interrupted; reconnecting", error=problem.message)
        self._uncover_all(poll=True)
        return self._advance(Ended(self.clock.now(), clean=False, problem=problem))

    async def _read(self, *, live: bool, window: str) -> tuple[Mapping[str, Any], ...]:
        """One response folded; the rows that came out (none after a reset)."""
        try:
            response = await self.client.read(self.fold.cursor, live=live, window=window)
        except ShapeGone as gone:
            log.info("realtime shape was reset; reading it again", handle=gone.handle)
            self.fold.reset(gone.handle)
            return ()
        try:
            return self.fold.apply(response)
        except ValueError as exc:
            log.warning(
                "realtime feed sent a value it could not read; reading it again", error=str(exc)
            )
            self.fold.reset()
            return ()

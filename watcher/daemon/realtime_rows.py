"""What the realtime feed follows, and what its rows do to the watches (a mixin of
:class:`~watcher.daemon.realtime.RealtimeFeed`).

A followed run whose row a shape holds is *covered*: its polls stretch to the
cross-check. Each row that changed is read by ``core/pushed.py``: applied as a poll's
result, or the run is polled where the row cannot tell. A snapshot is the first poll
of the runs their watches have not seen yet, which is how the daemon becomes ready in
seconds rather than at the ``/api`` budget's pace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio

from watcher.clock import Clock
from watcher.config.model import TriggerRunsWatch, TriggerRunWatch, TriggerSourceConfig
from watcher.core.feed import FeedState, Phase
from watcher.core.pushed import attempts_started
from watcher.core.shape import ShapeFold
from watcher.core.shape_plan import Candidate
from watcher.core.statuses import Source
from watcher.daemon.realtime_host import RealtimeHost, known_snapshot, row_moved, row_verdict
from watcher.daemon.realtime_shapes import ExtraShapes, ShapeReader
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.sources.trigger_realtime import run_of_row

__all__ = ["EARLY_DISCOVERY_SPACING", "FIRST_SNAPSHOT_WAIT", "FeedRows"]

FIRST_SNAPSHOT_WAIT = 20.0
"""Seconds a run's first poll waits at start for the feed's first snapshot to hold it."""
EARLY_DISCOVERY_SPACING = 10.0
"""At most one early discovery pass per watch this often: a busy environment inserts many
runs a second, and a pass may read 20 pages."""


class FeedRows:
    """The feed's followed runs, its cover, and what rows do to them."""

    host: RealtimeHost
    config: TriggerSourceConfig
    clock: Clock
    fold: ShapeFold
    state: FeedState
    extra: ExtraShapes
    covered: set[str]
    environment: str | None
    changes: int
    applied: int
    baselines: int
    _wanted: anyio.Event
    _followed_ids: set[str]
    _early: dict[str, float]
    _followed_cache: tuple[int, list[WatchRuntime], dict[str, list[WatchRuntime]]] | None = None
    _deferred: set[str]
    _first_snapshot: bool
    _taken: dict[str, WatchRuntime]
    _taken_ready: anyio.Event

    # -- what it follows ------------------------------------------------------------------

    def _mode(self, rt: WatchRuntime) -> str:
        config = self.host.configs.get(rt.parent or rt.key)
        if isinstance(config, (TriggerRunWatch, TriggerRunsWatch)):
            return config.mode
        return "poll"

    def followed(self) -> list[WatchRuntime]:
        """The Trigger.dev runs in ``mode: auto`` still watched and not finished."""
        return [rt for rt in self._followable()[0] if not rt.removed and rt.finished_at is None]

    def _followable(self) -> tuple[list[WatchRuntime], dict[str, list[WatchRuntime]]]:
        """The runs in ``mode: auto``, finished or not, and the same by run id: rebuilt only
        when the registry changes, as every live response (many a second in a storm)
        asks for them."""
        cache = self._followed_cache
        if cache is None or cache[0] != self.host.revision:
            runs = [
                rt
                for rt in self.host.registry.values()
                if rt.kind is Kind.RUN and rt.source is Source.TRIGGER and self._mode(rt) == "auto"
            ]
            by_run: dict[str, list[WatchRuntime]] = {}
            for rt in runs:
                by_run.setdefault(rt.subject_id, []).append(rt)
            cache = self._followed_cache = (self.host.revision, runs, by_run)
        return cache[1], cache[2]

    def wanted(self, followed: Sequence[WatchRuntime] | None = None) -> bool:
        """Whether anything needs the feed: a followed run, or a discovery in ``auto`` mode."""
        if followed if followed is not None else any(True for _ in self.followed()):
            return True
        return any(
            isinstance(config, TriggerRunsWatch) and config.mode == "auto"
            for config in self.host.configs.values()
        )

    def added(self, rt: WatchRuntime) -> None:
        """A runtime was added: a Trigger.dev run or discovery in ``auto`` mode wants the feed.

        Until the first snapshot is read, a run's first poll waits for it (at most
        ``FIRST_SNAPSHOT_WAIT``): the snapshot holds its status at no ``/api`` cost."""
        if rt.source is Source.TRIGGER:
            if rt.kind is Kind.RUN:
                self._followed_ids.add(rt.subject_id)
                if self._first_snapshot and self.config.realtime and self._mode(rt) == "auto":
                    self._deferred.add(rt.key)
                    self.host.defer(rt, FIRST_SNAPSHOT_WAIT)
            self._wanted.set()

    def take_over(self, keys: Sequence[str]) -> list[str]:
        """Runs taken over from another replica (a cluster takeover, their state read from
        Redis): those a shape holds are judged against their rows, as a snapshot judges
        a restored state (the same counts as seen, a change is read once and announced
        ``seen_late``), at no ``/api`` cost. Returns the keys the feed cannot judge."""
        held = self._held()
        rest = []
        for key in keys:
            rt = self.host.registry.get(key)
            if rt is None or key not in self.covered or rt.subject_id not in held:
                rest.append(key)
            else:
                self._taken[key] = rt
        if self._taken:
            self._taken_ready.set()
        return rest

    async def _judge_taken(self) -> None:
        """Judge the runs :meth:`take_over` handed over, as they arrive."""
        while True:
            await self._taken_ready.wait()
            self._taken_ready = anyio.Event()
            taken, self._taken = self._taken, {}
            held = self._held()
            rows = [held[rt.subject_id] for rt in taken.values() if rt.subject_id in held]
            await self._changed(rows)
            for rt in taken.values():
                if rt.subject_id not in held:  # its shape went meanwhile
                    self.host.poll_soon(rt)

    @property
    def awaiting(self) -> int:
        """Runs whose first poll waits for the feed's first snapshot."""
        return len(self._deferred)

    def _first_snapshot_done(self) -> None:
        """The first snapshot was read (or could not be): runs it did not hold are polled."""
        self._first_snapshot = False
        for key in self._deferred:
            rt = self.host.registry.get(key)
            if rt is not None and key not in self.covered:
                self.host.poll_soon(rt)
        self._deferred.clear()

    def _keeps(self, row: Mapping[str, Any]) -> bool:
        """Hold the rows of followed runs and of runs a discovery may adopt: a large
        environment's snapshot must not cost a row per run (the others' updates still
        come out, by key, for early discovery)."""
        if row.get("friendlyId") in self._followed_ids:
            return True
        task, tags = row.get("taskIdentifier"), row.get("runTags")
        return self._discovery_matches(
            task if isinstance(task, str) else None,
            tuple(tags) if isinstance(tags, list) else (),
        )

    def _discovery_matches(self, task: str | None, tags: tuple[str, ...]) -> bool:
        return any(True for _ in self._discoveries(task, tags))

    def _discoveries(self, task: str | None, tags: tuple[str, ...]) -> Iterable[str]:
        """The keys of ``trigger_runs`` watches in ``auto`` whose filter may hold such a run."""
        if task is None:
            return
        for key, config in self.host.configs.items():
            if not isinstance(config, TriggerRunsWatch) or config.mode != "auto":
                continue
            flt = config.filter
            if (flt.task and task not in flt.task) or (flt.tag and not set(flt.tag) & set(tags)):
                continue
            yield key

    # -- covering and changes ------------------------------------------------------------------

    def _folds(self, but: ShapeReader | None = None) -> list[ShapeFold]:
        """The folds that hold runs now: the environment's and each synced extra shape's."""
        extra = [r.fold for r in self.extra.readers.values() if r.fold.synced and r is not but]
        return [self.fold, *extra]

    def _held(self, but: ShapeReader | None = None) -> dict[str, Mapping[str, Any]]:
        """Every run a shape holds, by id (its row)."""
        held: dict[str, Mapping[str, Any]] = {}
        for fold in self._folds(but):
            for row in fold.rows.values():
                run_id = row.get("friendlyId")
                if isinstance(run_id, str):
                    held[run_id] = row
        return held

    # -- extra shapes (``realtime_shapes.ShapeHost``) ----------------------------------------

    def candidates(self) -> list[Candidate]:
        """The followed runs the environment's shape does not hold, ranked: a
        ``trigger_run`` watch before a followed discovery, an active run before an idle one."""
        main = {row.get("friendlyId") for row in self.fold.rows.values()}
        out = []
        for rt in self.followed():
            if rt.subject_id in main:
                continue
            known = known_snapshot(rt)
            rank = (0 if rt.parent is None else 2) + (0 if rt.active else 1)
            tags = known.tags if known else ()
            out.append(Candidate(rt.subject_id, tags, rank, known=known is not None))
        return out

    def uncovered(self) -> int:
        """Followed runs no shape holds now (polled)."""
        return sum(1 for rt in self.followed() if rt.key not in self.covered)

    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether a tag shape's snapshot row is held (as the environment's shape decides)."""
        return self._keeps(row)

    def streaming(self) -> bool:
        """Whether the environment's shape delivers."""
        return self.fold.synced and self.state.phase is Phase.STREAMING

    async def shape_synced(self, reader: ShapeReader) -> None:
        """An extra shape's snapshot: cover what it holds, and read its rows as a snapshot."""
        followed = self.followed()
        self._cover(followed, check=False)
        await self._changed(reader.fold.rows.values())

    async def shape_rows(self, reader: ShapeReader, rows: tuple[Mapping[str, Any], ...]) -> None:
        """Rows that changed in an extra shape: read as the environment's are."""
        followed = self.followed()
        await self._changed(rows, reader.fold.trails)
        self._cover(followed)
        if reader.spec.kind == "run" and not any(
            rt.subject_id == reader.spec.key for rt in self.followed()
        ):
            self.extra.poke()  # its run finished: the connection goes to another run now

    def shape_lost(self, reader: ShapeReader) -> None:
        """An extra shape stopped: the runs only it held are polled again."""
        if not reader.fold.rows:
            return
        ids = {row.get("friendlyId") for row in reader.fold.rows.values()}
        elsewhere = self._held(but=reader)
        for key in list(self.covered):
            rt = self.host.registry.get(key)
            if rt is not None and rt.subject_id in ids and rt.subject_id not in elsewhere:
                self.covered.discard(key)
                self.host.cover(rt, False)

    def _cover(self, followed: Sequence[WatchRuntime], *, check: bool = True) -> None:
        """Cover the followed runs the shape holds and were not covered yet; with ``check``,
        poll those whose row shows a change their watch has not seen."""
        uncovered = [rt for rt in followed if rt.key not in self.covered]
        # Steady state: every followed run is covered; no pass over the held rows.
        held = self._held() if uncovered else {}
        for rt in uncovered:
            self._followed_ids.add(rt.subject_id)
            row = held.get(rt.subject_id)
            run = run_of_row(row) if row is not None else None
            if run is None:
                continue
            self.covered.add(rt.key)
            self.host.cover(rt, True)
            if check and row_moved(rt, run):
                self.host.poll_soon(rt)
        for key in list(self.covered):
            gone = self.host.registry.get(key)
            if gone is None or gone.removed or gone.finished_at is not None:
                self.covered.discard(key)

    async def _changed(
        self,
        rows: Iterable[Mapping[str, Any]],
        trails: Sequence[Sequence[object]] | None = None,
    ) -> None:
        """Act on the rows that changed (``core/pushed.py``): apply each followed run's
        row as a poll's result, or poll the run where the row cannot tell; a run nobody
        follows may start an early discovery pass. Without ``trails`` the rows are a
        snapshot: it baselines the runs their watches have not seen, confirms the ones
        that stand as last seen, and polls the ones that moved."""
        if not rows:
            return
        by_run = self._followable()[1]
        for index, row in enumerate(rows):
            run = run_of_row(row)
            if run is None:
                continue
            runtimes = by_run.get(run.run_id)
            if runtimes is None:
                self._discovered(run.task, run.tags)
                continue
            trail: Sequence[object] = ()
            if trails is not None and index < len(trails):
                trail = trails[index]
            for rt in runtimes:
                if rt.removed or rt.finished_at is not None:
                    continue
                fresh = known_snapshot(rt) is None
                verdict = row_verdict(
                    rt, run, trail if rt.key in self.covered else (), self.environment
                )
                if verdict == "poll" or verdict == "number":
                    if verdict == "number":
                        rt.attempts_ahead += attempts_started(trail) or 0
                    self.changes += 1
                    self.host.poll_soon(rt)
                elif verdict == "same":
                    if trails is None:
                        self.host.saw(rt)
                else:
                    if fresh:
                        self.baselines += 1
                    else:
                        self.applied += 1
                    await self.host.apply_pushed(rt, verdict)

    def _discovered(self, task: str | None, tags: tuple[str, ...]) -> None:
        """A run nobody follows appeared or moved: discovery passes whose filter may hold it
        look now rather than at their next pass."""
        now = self.clock.now()
        for key in self._discoveries(task, tags):
            rt = self.host.registry.get(key)
            if rt is None or rt.removed:
                continue
            last = self._early.get(key)
            if last is None or now - last >= EARLY_DISCOVERY_SPACING:
                self._early[key] = now
                self.host.poll_soon(rt)

    def _uncover_all(self, *, poll: bool) -> None:
        self.extra.poke()  # the environment's shape is down: so are the extra ones
        for key in list(self.covered):
            rt = self.host.registry.get(key)
            if rt is not None and poll:
                self.host.cover(rt, False)
            elif rt is not None:
                rt.pushed = False
        self.covered.clear()

"""Extra realtime shapes for the runs the environment's shape leaves out.

A capped environment shape (the provider's newer backend holds 1,000 runs of a
multi-run shape, silently), or a run created before the window, leaves followed runs
polled. :class:`ExtraShapes` covers them within ``sources.trigger.realtime_connections``
(the environment's shape is one of them): ``core/shape_plan.py`` chooses tag shapes and
run shapes, and each shape is read like the environment's, on its own connection, by
the push-feed state machine (``core/feed.py``): a snapshot, then long polls; a failure
backs off, three of them (or a refusal) rest the shape for ``realtime_retry_after``. A
429 is the plan's connection limit: the shape is dropped and the budget shrinks to
what the server took, until the next rotation of the environment's shape.

Every shape's rows go through the same reading as the environment's (the feed's
:class:`~watcher.daemon.realtime_rows.FeedRows`), so a run is one event whichever
shape saw it first. The runs no shape covers stay polled, and are counted
(``run_watcher_realtime_uncovered_runs``, ``run-watcher status``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, assert_never

import anyio
import structlog

from watcher.clock import Clock
from watcher.config.model import TriggerSourceConfig
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
    StretchPolls,
    Wake,
    Want,
    advance,
)
from watcher.core.shape import ShapeFold
from watcher.core.shape_plan import Candidate, ShapePlan, ShapeSpec, plan_shapes
from watcher.sources.errors import SourceError
from watcher.sources.trigger_realtime import ShapeGone, TriggerRealtime

__all__ = ["REPLAN_EVERY", "ExtraShapes", "ShapeHost", "ShapeReader"]

log = structlog.get_logger("watcher.realtime")

REPLAN_EVERY = 15.0
"""Seconds between two plans of the extra shapes (runs finish, others need a shape)."""
REPLAN_SOON = 2.0
"""Seconds to the next plan while some left-out runs are not known yet (their tags)."""


class ShapeReader:
    """One extra shape: its rows and where its connection stands."""

    def __init__(self, spec: ShapeSpec, fold: ShapeFold) -> None:
        self.spec = spec
        self.fold = fold
        self.state = FeedState()
        self.scope = anyio.CancelScope()


class ShapeHost(Protocol):
    """What the extra shapes need of the feed."""

    def candidates(self) -> list[Candidate]:
        """The followed runs the environment's shape does not hold, with their tags (the
        runs extra shapes hold now included: the plan keeps their shapes)."""
        ...

    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether a snapshot row is held (a followed run, or one a discovery may adopt)."""
        ...

    async def shape_synced(self, reader: ShapeReader) -> None:
        """``reader``'s snapshot is read: cover what it holds, act on its rows."""
        ...

    async def shape_rows(self, reader: ShapeReader, rows: tuple[Mapping[str, Any], ...]) -> None:
        """Rows that changed in ``reader``'s shape."""
        ...

    def shape_lost(self, reader: ShapeReader) -> None:
        """``reader`` no longer delivers: the runs only it held are polled again."""
        ...

    def streaming(self) -> bool:
        """Whether the environment's shape delivers (extra shapes serve only then)."""
        ...


class ExtraShapes:
    """The extra shapes of one environment's feed, planned and read."""

    def __init__(
        self,
        host: ShapeHost,
        client: TriggerRealtime,
        config: TriggerSourceConfig,
        *,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.host = host
        self.client = client
        self.config = config
        self.clock = clock
        self.rng = rng
        self.policy = FeedPolicy(retry_after=config.realtime_retry_after)
        self.slots = max(0, config.realtime_connections - 1)
        """Extra connections allowed now (a 429 lowers it to what the server took)."""
        self.readers: dict[ShapeSpec, ShapeReader] = {}
        self.refused_tags: set[str] = set()
        """Tags whose shape came back capped itself: not chosen again."""
        self.missed: dict[str, set[str]] = {}
        """Per run, the tags whose shape did not hold it (created before the window)."""
        self.resting: dict[ShapeSpec, float] = {}
        """Shapes that kept failing, and when they may be tried again."""
        self.plan = ShapePlan((), {}, ())
        self.limited = 0
        """Times the server refused an extra connection (429)."""
        self._replan = anyio.Event()
        self._unknown = False

    @property
    def live(self) -> int:
        """Extra shapes delivering now."""
        return sum(1 for r in self.readers.values() if r.fold.synced)

    @property
    def uncovered(self) -> int:
        """Followed runs no shape was planned for (polled), as of the last plan."""
        return len(self.plan.uncovered)

    def poke(self) -> None:
        """Plan again now (the environment's shape was read, or the budget changed)."""
        self._replan.set()

    def reset_budget(self) -> None:
        """A new session of the environment's shape: try the configured budget again."""
        self.slots = max(0, self.config.realtime_connections - 1)

    async def run(self) -> None:
        """Plan and read the extra shapes until cancelled."""
        async with anyio.create_task_group() as tg:
            while True:
                with anyio.move_on_after(REPLAN_SOON if self._unknown else REPLAN_EVERY):
                    await self._replan.wait()
                self._replan = anyio.Event()
                self._apply(self._planned(), tg)

    def _planned(self) -> ShapePlan:
        if not self.host.streaming() or self.slots <= 0:
            return ShapePlan((), {}, tuple(c.run_id for c in self.host.candidates()))
        now = self.clock.now()
        self.resting = {s: t for s, t in self.resting.items() if t > now}
        resting_runs = {s.key for s in self.resting if s.kind == "run"}
        resting_tags = {s.key for s in self.resting if s.kind == "tag"}
        candidates = [
            replace(c, tags=tuple(t for t in c.tags if t not in self.missed.get(c.run_id, ())))
            for c in self.host.candidates()
            if c.run_id not in resting_runs
        ]
        self._unknown = any(not c.known for c in candidates)
        unique = {c.run_id: c for c in candidates}
        return plan_shapes(
            unique.values(),
            self.slots,
            cap=self.config.realtime_cap,
            current=self.readers.keys(),
            refused_tags=self.refused_tags | resting_tags,
        )

    def _apply(self, plan: ShapePlan, tg: anyio.abc.TaskGroup) -> None:
        self.plan = plan
        wanted = set(plan.shapes)
        for spec in [s for s in self.readers if s not in wanted]:
            self.readers.pop(spec).scope.cancel()
        for spec in plan.shapes:
            if spec not in self.readers:
                keep = self.host.keeps if spec.kind == "tag" else _keep_all
                reader = self.readers[spec] = ShapeReader(spec, ShapeFold(keep, trail="status"))
                tg.start_soon(self._serve, reader)
        if plan.shapes or plan.uncovered:
            log.info(
                "realtime extra shapes planned",
                tags=sum(1 for s in plan.shapes if s.kind == "tag"),
                runs=sum(1 for s in plan.shapes if s.kind == "run"),
                uncovered=len(plan.uncovered),
                connections=1 + len(plan.shapes),
            )

    # -- one shape --------------------------------------------------------------------------

    def _advance(self, reader: ShapeReader, event: Input) -> tuple[Action, ...]:
        reader.state, actions = advance(reader.state, event, self.policy, self.rng)
        return actions

    async def _serve(self, reader: ShapeReader) -> None:
        with reader.scope:
            try:
                pending = list(self._advance(reader, Want(self.clock.now())))
                if pending == [Enqueue()]:
                    pending = list(self._advance(reader, Start()))
                while pending:
                    action = pending.pop(0)
                    match action:
                        case Connect():
                            pending += await self._session(reader)
                        case Sleep(seconds=seconds):
                            await anyio.sleep(seconds)
                            pending += self._advance(reader, Wake())
                        case FallBack(problem=problem, wait=wait):
                            self.resting[reader.spec] = self.clock.now() + wait
                            log.warning(
                                "realtime extra shape unavailable; its runs are polled",
                                shape=reader.spec.label,
                                error=problem.message if problem else "kept failing",
                                retry_in=round(wait),
                            )
                        case Release() | StretchPolls() | Enqueue():
                            pass
                        case _:
                            assert_never(action)
            finally:
                self._lost(reader)
        if self.readers.get(reader.spec) is reader:
            del self.readers[reader.spec]
            self.poke()

    def _lost(self, reader: ShapeReader) -> None:
        self.host.shape_lost(reader)
        reader.fold.reset()

    async def _session(self, reader: ShapeReader) -> tuple[Action, ...]:
        spec = reader.spec
        reader.fold.reset()
        started = self.clock.now()
        try:
            while not reader.fold.synced:
                await self._read(reader, live=False)
        except SourceError as exc:
            return self._failed(reader, exc, refused=True)
        self._advance(reader, Delivering())
        self._judge(reader)
        await self.host.shape_synced(reader)
        try:
            while spec.kind == "run" or self.clock.now() - started < self.config.realtime_rotate:
                rows = await self._read(reader, live=reader.fold.synced)
                await self.host.shape_rows(reader, rows)
        except SourceError as exc:
            return self._failed(reader, exc, refused=False)
        return self._advance(reader, Ended(self.clock.now(), clean=True))

    def _judge(self, reader: ShapeReader) -> None:
        """A tag shape at the cap is capped itself; a run it was chosen for but does not
        hold (created before the window) is not given to that tag again."""
        spec = reader.spec
        if spec.kind != "tag":
            return
        if reader.fold.size >= self.config.realtime_cap:
            self.refused_tags.add(spec.key)
        held = {row.get("friendlyId") for row in reader.fold.rows.values()}
        for run_id, chosen in self.plan.expected.items():
            if chosen == spec and run_id not in held:
                self.missed.setdefault(run_id, set()).add(spec.key)

    def _failed(
        self, reader: ShapeReader, exc: SourceError, *, refused: bool
    ) -> tuple[Action, ...]:
        problem = exc.problem
        self._lost(reader)
        if problem.status_code == 429:
            # The plan's concurrent-connection limit: keep what the server took.
            self.limited += 1
            self.slots = max(0, sum(1 for r in self.readers.values() if r.fold.synced))
            log.warning(
                "realtime connection limit reached; extra shapes reduced",
                shape=reader.spec.label,
                extra_connections=self.slots,
                hint="lower sources.trigger.realtime_connections to what the plan allows",
            )
            self.readers.pop(reader.spec, None)
            self.poke()
            reader.scope.cancel()
            return ()
        event: Input = (
            Refused(self.clock.now(), problem)
            if refused
            else Ended(self.clock.now(), clean=False, problem=problem)
        )
        return self._advance(reader, event)

    async def _read(self, reader: ShapeReader, *, live: bool) -> tuple[Mapping[str, Any], ...]:
        fold = reader.fold
        try:
            response = await self.client.read(
                fold.cursor,
                live=live,
                window=None if reader.spec.kind == "run" else _window(self.config.realtime_window),
                run_id=reader.spec.key if reader.spec.kind == "run" else None,
                tags=(reader.spec.key,) if reader.spec.kind == "tag" else (),
            )
        except ShapeGone as gone:
            fold.reset(gone.handle)
            return ()
        try:
            return fold.apply(response)
        except ValueError as exc:
            log.warning("realtime extra shape sent a value it could not read", error=str(exc))
            fold.reset()
            return ()


def _keep_all(row: Mapping[str, Any]) -> bool:
    return True


def _window(seconds: float) -> str:
    """``createdAt`` as the API takes it (whole minutes, at least one)."""
    return f"{max(1, int(seconds // 60))}m"

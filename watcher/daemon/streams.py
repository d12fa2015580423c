"""Group event streams: at most ``max_streams`` open, each fed through the pure core.

A group watch not in ``poll`` mode asks for a stream after each poll that finds
it active. A fixed pool of workers (children of the daemon's task group, like
the pollers) serves those requests; when every worker is busy or the queue is
full, the group simply stays polled. While a stream is open the group is still
polled, at ``max_interval``, as a cross-check of the counts. What happens when a
stream delivers, ends, fails or is refused is decided by the feed state machine
(``watcher/core/feed.py``); this module performs its actions: connect, wait, tell
the operator, hand the group back to polling.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Protocol, assert_never

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from httpx_sse import ServerSentEvent

from watcher.clock import Clock
from watcher.config.model import ParallelSourceConfig, ParallelTaskGroupWatch, WatchConfig
from watcher.core.feed import (
    Action,
    Connect,
    Delivering,
    Ended,
    Enqueue,
    FallBack,
    FeedPolicy,
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
from watcher.core.group_stream import StreamBuffer, flush, hold, take
from watcher.core.health import Problem, ProblemKind
from watcher.core.snapshots import GroupObservation, GroupSnapshot
from watcher.core.watch import WatchState
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.sources.errors import ResponseShapeError, SourceError
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.parallel_models import StreamErrorEvent, parse_group_event

__all__ = ["GroupStreams", "StreamHost", "may_stream"]

log = structlog.get_logger("watcher.stream")


class StreamHost(Protocol):
    """What the stream workers need of the watcher: the watches' configs, and a way to
    hand over what a stream saw and to move a watch's polls."""

    @property
    def configs(self) -> Mapping[str, WatchConfig]:
        """The configs of the watches, by key."""
        ...

    def poll_soon(self, rt: WatchRuntime) -> None:
        """Poll ``rt`` now."""
        ...

    def stretch_polls(self, rt: WatchRuntime) -> None:
        """Poll ``rt`` only as a cross-check."""
        ...

    async def apply_streamed(self, rt: WatchRuntime, observation: GroupObservation) -> None:
        """Apply what a stream reported, as a poll's result would be."""
        ...


def may_stream(watch: object) -> bool:
    """Whether ``watch`` is a group watch whose mode lets it stream (a reload may change it)."""
    return isinstance(watch, ParallelTaskGroupWatch) and watch.mode != "poll"


def _group_snapshot(rt: WatchRuntime) -> GroupSnapshot | None:
    snapshot = rt.state.snapshot if isinstance(rt.state, WatchState) else None
    return snapshot if isinstance(snapshot, GroupSnapshot) else None


class GroupStreams:
    """The stream workers of one Parallel upstream."""

    def __init__(
        self,
        watcher: StreamHost,
        client: ParallelClient,
        gate: SourceGate,
        config: ParallelSourceConfig,
        *,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.watcher = watcher
        self.client = client
        self.gate = gate
        self.config = config
        self.clock = clock
        self.rng = rng
        self._send: MemoryObjectSendStream[WatchRuntime] | None = None
        self._serving: dict[str, anyio.CancelScope] = {}
        self.open = 0
        self.connects = 0
        self.fallbacks = 0

    @property
    def policy(self) -> FeedPolicy:
        """The feed limits (read each time: a reload may change ``stream_retry_after``)."""
        return FeedPolicy(retry_after=self.config.stream_retry_after)

    def _advance(self, rt: WatchRuntime, event: Input) -> tuple[Action, ...]:
        rt.feed, actions = advance(rt.feed, event, self.policy, self.rng)
        return actions

    def want(self, rt: WatchRuntime) -> None:
        """Ask for a stream for ``rt`` if it should have one; never waits."""
        if self._send is None or self.config.max_streams == 0 or rt.kind is not Kind.GROUP:
            return
        if not self._active(rt):
            return
        for action in self._advance(rt, Want(self.clock.now())):
            assert isinstance(action, Enqueue), action
            try:
                self._send.send_nowait(rt)
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                self._advance(rt, Stop())  # every stream slot is taken: keep polling

    def close(self, key: str) -> None:
        """Close the stream of watch ``key`` now, if one is open (removed, or set to poll)."""
        if (scope := self._serving.get(key)) is not None:
            scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled."""
        send, receive = anyio.create_memory_object_stream[WatchRuntime](
            max(1, self.config.max_streams)
        )
        self._send = send
        try:
            # The task group closes first: workers run until cancelled, the queue outlives them.
            async with send, receive, anyio.create_task_group() as tg:
                for _ in range(self.config.max_streams):
                    tg.start_soon(self._worker, receive.clone())
                task_status.started()
        finally:
            self._send = None

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[WatchRuntime]) -> None:
        async with receive:
            async for rt in receive:
                if not self._active(rt):
                    self._advance(rt, Stop())
                    continue
                self.open += 1
                try:
                    with anyio.CancelScope() as self._serving[rt.key]:
                        await self._perform(rt, self._advance(rt, Start()))
                except Exception:
                    log.exception("internal error in a group event stream", watch=rt.key)
                    await self._perform(rt, self._advance(rt, Stop(self.clock.now(), crashed=True)))
                finally:
                    self._serving.pop(rt.key, None)
                    self.open -= 1
                    # Closed by a reload or a removal while working: back to polling.
                    for action in self._advance(rt, Stop()):
                        assert isinstance(action, Release), action
                        self._release(rt)

    def _active(self, rt: WatchRuntime) -> bool:
        """The group is watched, wants streams (a reload may have said ``poll``), is active."""
        if rt.removed or not may_stream(self.watcher.configs.get(rt.key)):
            return False
        snapshot = _group_snapshot(rt)
        return snapshot is not None and snapshot.is_active

    async def _perform(self, rt: WatchRuntime, actions: tuple[Action, ...]) -> None:
        """Perform the feed's actions, and those that their outcomes lead to, in order."""
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            match action:
                case Connect():
                    if self._active(rt):
                        pending += await self._connect(rt)
                    else:
                        pending += self._advance(rt, Stop())
                case Sleep(seconds=seconds):
                    await anyio.sleep(seconds)
                    pending += self._advance(rt, Wake())
                case StretchPolls():
                    self.watcher.stretch_polls(rt)
                case FallBack(problem=problem, wait=wait):
                    self._report_fall_back(rt, problem, wait)
                case Release():
                    self._release(rt)
                case Enqueue():  # pragma: no cover - only ``want`` asks for it
                    raise AssertionError("Enqueue inside a worker")
                case _:
                    assert_never(action)

    async def _connect(self, rt: WatchRuntime) -> tuple[Action, ...]:
        follower = _Follower(self.watcher, rt, self.client.events.scrub, self._delivering)
        self.connects += 1
        try:
            end = await self.client.follow_group_events(
                rt.subject_id,
                rt.stream_cursor,
                Ticket(self.gate),
                follower,
                idle_timeout=self.config.events_idle_timeout,
                max_age=self.config.events_max_age,
            )
        except SourceError as exc:
            await follower.flush()
            return self._advance(rt, Refused(self.clock.now(), exc.problem))
        await follower.flush()
        problem = end.problem or follower.error
        clean = problem is None and not (end.reason == "closed" and end.events == 0)
        actions = self._advance(rt, Ended(self.clock.now(), clean, problem))
        if not clean and any(isinstance(a, Sleep) for a in actions):
            log.info(
                "group event stream ended; reconnecting",
                watch=rt.key,
                reason=end.reason,
                events=end.events,
                error=problem.message if problem else None,
            )
        return actions

    def _delivering(self, rt: WatchRuntime) -> None:
        for action in self._advance(rt, Delivering()):
            assert isinstance(action, StretchPolls), action
            self.watcher.stretch_polls(rt)

    def _release(self, rt: WatchRuntime) -> None:
        if not rt.removed:
            # Back to polling: look now, the stream may have missed the end.
            self.watcher.poll_soon(rt)

    def _report_fall_back(self, rt: WatchRuntime, problem: Problem | None, wait: float) -> None:
        self.fallbacks += 1
        watch = self.watcher.configs.get(rt.key)
        loud = isinstance(watch, ParallelTaskGroupWatch) and watch.mode == "stream"
        (log.warning if loud else log.info)(
            "group event stream unavailable; polling instead",
            watch=rt.key,
            error=problem.message if problem else None,
            retry_stream_in=round(wait, 1),
        )


class _Follower:
    """Parses a group's events and applies them through the watcher, as polls would."""

    def __init__(
        self,
        watcher: StreamHost,
        rt: WatchRuntime,
        scrub: Callable[[str], str],
        delivering: Callable[[WatchRuntime], None],
    ) -> None:
        self.watcher = watcher
        self.rt = rt
        self.scrub = scrub
        self.delivering = delivering
        self.buffer = StreamBuffer()
        self.error: Problem | None = None
        self.what = f"events stream of {rt.key}"
        self._started = False
        self._since: float | None = None

    @property
    def quiet_after(self) -> float | None:
        since = self._since
        return hold(None if since is None else anyio.current_time() - since)

    async def event(self, sse: ServerSentEvent) -> bool:
        rt = self.rt
        if not self._started:
            self._started = True
            self.delivering(rt)
        try:
            parsed = parse_group_event(sse.data, self.what, rt.subject_id)
        except StreamErrorEvent as exc:
            self.error = Problem(ProblemKind.UNREACHABLE, self.scrub(str(exc)))
            return True
        except ResponseShapeError as exc:
            log.warning("group event not understood; skipped", watch=rt.key, error=str(exc))
            return False
        if parsed is None:
            rt.stream_cursor = sse.id or rt.stream_cursor
            return False
        event_id, item = parsed
        rt.stream_cursor = event_id or sse.id or rt.stream_cursor
        state = rt.state
        assert isinstance(state, WatchState)
        self.buffer = take(self.buffer, state, item)
        if self.buffer.empty:
            return False
        if self._since is None:
            self._since = anyio.current_time()
        if hold(anyio.current_time() - self._since) == 0.0:
            await self.flush()
        return not self._group_active()

    def _group_active(self) -> bool:
        snapshot = _group_snapshot(self.rt)
        return not self.rt.removed and (snapshot is None or snapshot.is_active)

    async def quiet(self) -> None:
        await self.flush()

    async def flush(self) -> None:
        """Apply what is buffered (also when the stream ends)."""
        state = self.rt.state
        if self.rt.removed or not isinstance(state, WatchState):
            return
        observation = flush(self.buffer, state)
        self.buffer = StreamBuffer()
        self._since = None
        if observation is not None:
            await self.watcher.apply_streamed(self.rt, observation)

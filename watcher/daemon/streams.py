"""Group event streams: at most ``max_streams`` open, each fed through the pure core.

A group watch not in ``poll`` mode asks for a stream after each poll that finds
it active. A fixed pool of workers (children of the daemon's task group, like
the pollers) serves those requests; when every worker is busy or the queue is
full, the group simply stays polled. While a stream is open the group is still
polled, at ``max_interval``, as a cross-check of the counts. A stream that is
refused (404, 401, ...) or fails three times in a row hands the group back to
polling for ``stream_retry_after``; other disconnects reconnect from the last
event id, with capped, jittered backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from httpx_sse import ServerSentEvent

from watcher.clock import Clock
from watcher.config.model import ParallelSourceConfig, ParallelTaskGroupWatch
from watcher.core.group_stream import StreamBuffer, flush, hold, take
from watcher.core.health import Problem, ProblemKind
from watcher.core.snapshots import GroupSnapshot
from watcher.core.watch import WatchState
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.sources.errors import ResponseShapeError, SourceError
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.parallel_models import StreamErrorEvent, parse_group_event

if TYPE_CHECKING:
    from watcher.daemon.watcher import Watcher

__all__ = ["GroupStreams", "may_stream"]

log = structlog.get_logger("watcher.stream")

_MAX_FAILURES = 3
_MAX_BACKOFF = 30.0
_TRANSIENT_RETRY = 30.0
"""After a stream failed for a passing reason, poll at most this long before retrying it."""


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
        watcher: Watcher,
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

    def want(self, rt: WatchRuntime) -> None:
        """Ask for a stream for ``rt`` if it should have one; never waits."""
        if self._send is None or not self._eligible(rt):
            return
        try:
            self._send.send_nowait(rt)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            return  # every stream slot is taken and the queue is full: keep polling
        rt.stream_queued = True

    def close(self, key: str) -> None:
        """Close the stream of watch ``key`` now, if one is open (removed, or set to poll)."""
        if (scope := self._serving.get(key)) is not None:
            scope.cancel()

    def _eligible(self, rt: WatchRuntime) -> bool:
        if self.config.max_streams == 0 or rt.kind is not Kind.GROUP:
            return False
        if rt.streaming or rt.stream_queued or self.clock.now() < rt.stream_retry_at:
            return False
        return self._active(rt)

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
                # ``stream_queued`` stays set while this worker owns the group.
                if not self._active(rt):
                    rt.stream_queued = False
                    continue
                self.open += 1
                try:
                    with anyio.CancelScope() as self._serving[rt.key]:
                        await self._serve(rt)
                except Exception:
                    log.exception("internal error in a group event stream", watch=rt.key)
                    self._fall_back(rt, None)
                finally:
                    self._serving.pop(rt.key, None)
                    self.open -= 1
                    rt.stream_queued = False
                    if not rt.removed:
                        # Back to polling: look now, the stream may have missed the end.
                        self.watcher.poll_soon(rt)

    def _active(self, rt: WatchRuntime) -> bool:
        """The group is watched, wants streams (a reload may have said ``poll``), is active."""
        if rt.removed or not may_stream(self.watcher.configs.get(rt.key)):
            return False
        snapshot = _group_snapshot(rt)
        return snapshot is not None and snapshot.is_active

    async def _serve(self, rt: WatchRuntime) -> None:
        failures = 0
        while self._active(rt):
            follower = _Follower(self.watcher, rt, self.client.events.scrub)
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
                failures += 1
                if exc.problem.kind.definitive or failures >= _MAX_FAILURES:
                    self._fall_back(rt, exc.problem)
                    return
                await anyio.sleep(self._backoff(failures))
                continue
            finally:
                # Polls go back to their own pace until the next connection delivers.
                rt.streaming = False
                await follower.flush()
            problem = end.problem or follower.error
            if problem is not None or (end.reason == "closed" and end.events == 0):
                failures += 1
                if failures >= _MAX_FAILURES:
                    self._fall_back(rt, problem)
                    return
                log.info(
                    "group event stream ended; reconnecting",
                    watch=rt.key,
                    reason=end.reason,
                    events=end.events,
                    error=problem.message if problem else None,
                )
                await anyio.sleep(self._backoff(failures))
                continue
            failures = 0

    def _backoff(self, failures: int) -> float:
        cap = min(_MAX_BACKOFF, 0.5 * 2.0**failures)
        return self.rng.uniform(cap / 2, cap)

    def _fall_back(self, rt: WatchRuntime, problem: Problem | None) -> None:
        self.fallbacks += 1
        wait = self.config.stream_retry_after
        if problem is not None and not problem.kind.definitive:
            # A blip (connection refused, a 5xx): try the stream again soon, not after
            # the long wait meant for a stream the API refuses.
            wait = min(wait, self.rng.uniform(_TRANSIENT_RETRY / 2, _TRANSIENT_RETRY))
        rt.stream_retry_at = self.clock.now() + wait
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

    def __init__(self, watcher: Watcher, rt: WatchRuntime, scrub: Callable[[str], str]) -> None:
        self.watcher = watcher
        self.rt = rt
        self.scrub = scrub
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
            self.watcher.stretch_polls(rt)
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

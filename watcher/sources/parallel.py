"""Parallel API client: task groups, their failed-runs stream, single task runs."""

from __future__ import annotations

from dataclasses import dataclass

from httpx_sse import ServerSentEvent

from watcher.core.health import Problem, ProblemKind
from watcher.core.ids import path_segment
from watcher.core.snapshots import FailedRun, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus
from watcher.sources.errors import SourceError
from watcher.sources.gate import Ticket
from watcher.sources.http import FollowEnd, StreamFollower, Upstream
from watcher.sources.parallel_models import (
    StreamErrorEvent,
    parse_group,
    parse_run,
    parse_run_event,
)

__all__ = ["FailedRunsRead", "ParallelClient"]


@dataclass(frozen=True, slots=True)
class FailedRunsRead:
    """Failed runs read after a cursor, and the cursor to resume from."""

    runs: tuple[FailedRun, ...]
    cursor: str | None
    complete: bool


class ParallelClient:
    """``GET`` endpoints of Parallel's task API under ``prefix`` (``/v1`` or ``/v1beta``)."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        prefix: str = "/v1",
        max_stream_events: int = 10_000,
        events: Upstream | None = None,
    ) -> None:
        self.upstream = upstream
        self.prefix = prefix.rstrip("/")
        self.max_stream_events = max_stream_events
        self.events = events or upstream
        """The upstream (own connection pool) that holds group event streams open."""

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        """The polling seam and the event-stream seam."""
        return (self.upstream,) if self.events is self.upstream else (self.upstream, self.events)

    async def follow_group_events(
        self,
        group_id: str,
        cursor: str | None,
        ticket: Ticket,
        follower: StreamFollower,
        *,
        idle_timeout: float,
        max_age: float,
    ) -> FollowEnd:
        """``GET {prefix}/tasks/groups/{id}/events`` from ``cursor``, held open for ``follower``."""
        path = f"{self.prefix}/tasks/groups/{path_segment(group_id)}/events"
        params = {"timeout": str(max(1, int(max_age)))}
        if cursor:
            params["last_event_id"] = cursor
        return await self.events.follow(
            path, params, ticket, follower, idle_timeout=idle_timeout, max_age=max_age
        )

    async def get_group(self, group_id: str, ticket: Ticket) -> GroupSnapshot:
        """``GET {prefix}/tasks/groups/{id}``: status and ``task_run_status_counts``."""
        path = f"{self.prefix}/tasks/groups/{path_segment(group_id)}"
        return parse_group(await self.upstream.get_body(path, {}, ticket), f"GET {path}")

    async def get_run(self, run_id: str, ticket: Ticket) -> RunSnapshot:
        """``GET {prefix}/tasks/runs/{id}``."""
        path = f"{self.prefix}/tasks/runs/{path_segment(run_id)}"
        return parse_run(await self.upstream.get_body(path, {}, ticket), f"GET {path}")

    async def failed_runs(
        self, group_id: str, cursor: str | None, ticket: Ticket, *, expect: int | None = None
    ) -> FailedRunsRead:
        """Read the group's runs stream with ``status=failed`` after ``cursor``.

        Stops at the end of the stream or once ``expect`` failed runs have been
        read (a server may keep the stream open). A stream that breaks mid-way
        still yields the complete events before the break, with the cursor after
        the last of them.
        """
        path = f"{self.prefix}/tasks/groups/{path_segment(group_id)}/runs"
        what = f"GET {path}"
        params = {"status": "failed"}
        if cursor:
            params["last_event_id"] = cursor
        runs: list[FailedRun] = []
        stream_error: str | None = None

        def take(sse: ServerSentEvent) -> bool:
            nonlocal cursor, stream_error
            try:
                parsed = parse_run_event(sse.data, what)
            except StreamErrorEvent as exc:
                stream_error = str(exc)
                return True
            if parsed is not None:
                event_id, run = parsed
                cursor = event_id or sse.id or cursor
                if run.status == ParallelStatus.FAILED:
                    runs.append(FailedRun.of(run))
            return expect is not None and len(runs) >= expect

        read = await self.upstream.read_stream(
            path, params, ticket, max_events=self.max_stream_events, enough=take
        )
        if stream_error is not None and not runs:
            raise SourceError(Problem(ProblemKind.UNREACHABLE, self.upstream.scrub(stream_error)))
        complete = not read.truncated and read.problem is None and stream_error is None
        return FailedRunsRead(tuple(runs), cursor, complete=complete)

"""Parallel API client: task groups, their failed-runs stream, single task runs."""

from __future__ import annotations

from dataclasses import dataclass

from watcher.core.health import Problem, ProblemKind
from watcher.core.ids import path_segment
from watcher.core.snapshots import FailedRun, GroupSnapshot, RunSnapshot
from watcher.sources.errors import SourceError
from watcher.sources.gate import Ticket
from watcher.sources.http import Upstream
from watcher.sources.parallel_models import (
    StreamErrorEvent,
    failed_run,
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
        self, upstream: Upstream, *, prefix: str = "/v1", max_stream_events: int = 10_000
    ) -> None:
        self.upstream = upstream
        self.prefix = prefix.rstrip("/")
        self.max_stream_events = max_stream_events

    async def get_group(self, group_id: str, ticket: Ticket) -> GroupSnapshot:
        """``GET {prefix}/tasks/groups/{id}``: status and ``task_run_status_counts``."""
        path = f"{self.prefix}/tasks/groups/{path_segment(group_id)}"
        return parse_group(await self.upstream.get_json(path, {}, ticket), f"GET {path}")

    async def get_run(self, run_id: str, ticket: Ticket) -> RunSnapshot:
        """``GET {prefix}/tasks/runs/{id}``."""
        path = f"{self.prefix}/tasks/runs/{path_segment(run_id)}"
        return parse_run(await self.upstream.get_json(path, {}, ticket), f"GET {path}")

    async def failed_runs(
        self, group_id: str, cursor: str | None, ticket: Ticket
    ) -> FailedRunsRead:
        """Read the group's runs stream with ``status=failed`` after ``cursor``.

        A stream that breaks mid-way still yields the complete events before the
        break, with the cursor after the last of them.
        """
        path = f"{self.prefix}/tasks/groups/{path_segment(group_id)}/runs"
        what = f"GET {path}"
        params = {"status": "failed"}
        if cursor:
            params["last_event_id"] = cursor
        read = await self.upstream.read_stream(
            path, params, ticket, max_events=self.max_stream_events
        )
        runs: list[FailedRun] = []
        for sse in read.events:
            try:
                parsed = parse_run_event(sse.data, what)
            except StreamErrorEvent as exc:
                if runs:
                    break
                raise SourceError(Problem(ProblemKind.UNREACHABLE, str(exc))) from None
            if parsed is None:
                continue
            event_id, run = parsed
            cursor = event_id or sse.id or cursor
            if isinstance(run, RunSnapshot) and run.status == "failed":
                runs.append(failed_run(run))
        return FailedRunsRead(
            tuple(runs), cursor, complete=not read.truncated and read.problem is None
        )

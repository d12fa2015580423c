"""Trigger.dev API client: retrieve one run, list runs for discovery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from watcher.core.ids import path_segment
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import TriggerApiVersion
from watcher.sources.gate import Ticket
from watcher.sources.http import Upstream
from watcher.sources.trigger_models import parse_list, parse_run
from watcher.sources.trigger_realtime import TriggerRealtime

__all__ = ["ListFilter", "ListPass", "TriggerClient", "environment_of_key", "trigger_headers"]


def trigger_headers(secret_key: str, api_version: TriggerApiVersion, agent: str) -> dict[str, str]:
    """The headers of every request, as the official SDK sends them: the key as bearer and,
    for the current version, ``x-trigger-api-version`` (the 3.x SDK sends none: legacy)."""
    headers = {"authorization": f"Bearer {secret_key}", "user-agent": agent}
    if api_version != "legacy":
        headers["x-trigger-api-version"] = api_version
    return headers


@dataclass(frozen=True, slots=True)
class ListFilter:
    """``filter[...]`` parameters of ``GET /api/v1/runs``."""

    status: Sequence[str] = ()
    task: Sequence[str] = ()
    tag: Sequence[str] = ()
    version: Sequence[str] = ()
    queue: Sequence[str] = ()
    period: str | None = None
    is_test: bool | None = None

    def params(self) -> dict[str, str]:
        """The query parameters, comma-separated as the API expects."""
        params: dict[str, str] = {}
        for key, values in (
            ("filter[status]", self.status),
            ("filter[taskIdentifier]", self.task),
            ("filter[tag]", self.tag),
            ("filter[version]", self.version),
            ("filter[queue]", self.queue),
        ):
            if values:
                params[key] = ",".join(values)
        if self.period:
            params["filter[createdAt][period]"] = self.period
        if self.is_test is not None:
            params["filter[isTest]"] = "true" if self.is_test else "false"
        return params


@dataclass(frozen=True, slots=True)
class ListPass:
    """One discovery pass: every run of the window, or up to the page cap."""

    runs: tuple[RunSnapshot, ...]
    pages: int
    complete: bool


_KEY_ENVIRONMENTS = {"prod": "prod", "stg": "staging", "dev": "dev", "preview": "preview"}


def environment_of_key(secret_key: str) -> str | None:
    """The environment a secret key belongs to, from its prefix (``tr_prod_...``)."""
    parts = secret_key.split("_", 2)
    if len(parts) == 3 and parts[0] == "tr":
        return _KEY_ENVIRONMENTS.get(parts[1], parts[1])
    return None


class TriggerClient:
    """``/api/v3/runs/{id}`` and ``/api/v1/runs``.

    ``environment`` names the key's environment: the retrieve endpoint does not say it,
    and an alert must (a failure in prod and one in dev are not the same page).
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        environment: str | None = None,
        realtime: TriggerRealtime | None = None,
    ) -> None:
        self.upstream = upstream
        self.environment = environment
        self.realtime = realtime
        """The environment's realtime feed (None: off, or a legacy API version)."""

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        """The HTTP seam of the API, and the realtime feed's."""
        if self.realtime is None:
            return (self.upstream,)
        return (self.upstream, self.realtime.upstream)

    async def get_run(self, run_id: str, ticket: Ticket) -> RunSnapshot:
        """``GET /api/v3/runs/{runId}``."""
        path = f"/api/v3/runs/{path_segment(run_id)}"
        snapshot = parse_run(await self.upstream.get_body(path, {}, ticket), f"GET {path}")
        if snapshot.environment is None and self.environment is not None:
            snapshot = replace(snapshot, environment=self.environment)
        return snapshot

    async def list_all(
        self, flt: ListFilter, ticket: Ticket, *, page_size: int = 100, max_pages: int = 20
    ) -> ListPass:
        """Page through the whole filtered window (newest first), up to ``max_pages``.

        A run created long ago that changes now sits deep in the list, so a
        pass reads to the end rather than stopping at runs it has seen.
        """
        path = "/api/v1/runs"
        base = {**flt.params(), "page[size]": str(page_size)}
        runs: list[RunSnapshot] = []
        cursor: str | None = None
        pages = 0
        seen_cursors: set[str] = set()
        while pages < max_pages:
            params = dict(base)
            if cursor:
                params["page[after]"] = cursor
            page, cursor = parse_list(
                await self.upstream.get_body(path, params, ticket), f"GET {path}"
            )
            pages += 1
            runs.extend(page)
            if not cursor or not page or cursor in seen_cursors:
                return ListPass(tuple(runs), pages, complete=True)
            seen_cursors.add(cursor)
        return ListPass(tuple(runs), pages, complete=False)

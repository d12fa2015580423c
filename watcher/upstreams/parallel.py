"""Parallel: ``x-api-key``, the ``/v1`` task API, and a second pool for group event streams."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace

from watcher.config.model import SourceOptions, SourcesConfig
from watcher.config.settings import DEFAULT_PARALLEL_URL
from watcher.core.events import Event, WatchType
from watcher.core.statuses import Source
from watcher.sources.http import HttpLimits, Upstream, build_pool
from watcher.sources.parallel import ParallelClient
from watcher.upstreams.plugin import Credential, Links, Opening

__all__ = ["PARALLEL", "ParallelPlugin"]


class ParallelPlugin:
    """Parallel task groups and task runs."""

    source = Source.PARALLEL
    credential = Credential("PARALLEL_API_KEY", lambda settings: settings.parallel_api_key)

    def options(self, sources: SourcesConfig) -> SourceOptions:
        """``sources.parallel``."""
        return sources.parallel

    listing = None

    def covering_keys(self, event: Event) -> list[str]:
        """A task run is covered by its own watch and by its group's."""
        keys = [f"{WatchType.PARALLEL_TASK_RUN.value}:{event.subject_id}"]
        if group := event.details.get("group_id"):
            keys.append(f"{WatchType.PARALLEL_TASK_GROUP.value}:{group}")
        return keys

    def links(self, sources: SourcesConfig, watch_type: WatchType) -> Links:
        """A group links to ``group_url``, runs to ``run_url``."""
        cfg = sources.parallel
        url = cfg.group_url if watch_type is WatchType.PARALLEL_TASK_GROUP else cfg.run_url
        return Links(url, cfg.run_url)

    async def open(self, stack: AsyncExitStack, opening: Opening) -> ParallelClient:
        """A client for polls and one for event streams, each with its own pool."""
        cfg = opening.sources.parallel
        headers = {"x-api-key": opening.key, "user-agent": opening.agent}
        limits = HttpLimits(
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.timeout,
            total_timeout=cfg.total_timeout,
            stream_timeout=cfg.stream_timeout,
            stream_idle_timeout=cfg.stream_idle_timeout,
            max_connections=cfg.max_concurrency,
        )
        base_url = opening.settings.parallel_base_url or cfg.base_url or DEFAULT_PARALLEL_URL
        # Event streams stay open for long: a pool of their own, so polls never wait for one.
        events_limits = replace(limits, max_connections=max(1, cfg.max_streams))
        client, fetcher = build_pool(base_url, headers, limits, transport=opening.transport)
        events_client, _ = build_pool(base_url, headers, events_limits, transport=opening.transport)
        for pool in (client, events_client):
            await stack.enter_async_context(pool)
        return ParallelClient(
            Upstream("parallel", client, opening.gate, limits, fetcher=fetcher),
            prefix=cfg.api_prefix,
            max_stream_events=cfg.max_stream_events,
            events=Upstream("parallel", events_client, opening.gate, events_limits),
        )


PARALLEL = ParallelPlugin()

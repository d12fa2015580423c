"""Trigger.dev: the secret key as bearer, the API-version header, the key's environment."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace

from watcher.config.model import SourceOptions, SourcesConfig
from watcher.config.settings import DEFAULT_TRIGGER_URL
from watcher.core.events import Event, WatchType
from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION, Source
from watcher.sources.http import HttpLimits, Upstream, build_client, build_pool
from watcher.sources.trigger import TriggerClient, environment_of_key, trigger_headers
from watcher.sources.trigger_realtime import TriggerRealtime
from watcher.upstreams.plugin import Credential, Links, Opening

__all__ = ["TRIGGER", "TriggerPlugin"]


class TriggerPlugin:
    """Trigger.dev runs, one by one or discovered by a filter."""

    source = Source.TRIGGER
    credential = Credential("TRIGGER_SECRET_KEY", lambda settings: settings.trigger_secret_key)

    def options(self, sources: SourcesConfig) -> SourceOptions:
        """``sources.trigger``."""
        return sources.trigger

    listing = WatchType.TRIGGER_RUNS

    def covering_keys(self, event: Event) -> list[str]:
        """A run is covered by its own ``trigger_run`` watch."""
        return [f"{WatchType.TRIGGER_RUN.value}:{event.subject_id}"]

    def links(self, sources: SourcesConfig, watch_type: WatchType) -> Links:
        """Every Trigger.dev watch links to the run's page."""
        return Links(sources.trigger.run_url, sources.trigger.run_url)

    async def open(self, stack: AsyncExitStack, opening: Opening) -> TriggerClient:
        """One client; its headers are the official SDK's."""
        cfg = opening.sources.trigger
        settings = opening.settings
        limits = HttpLimits(
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.timeout,
            total_timeout=cfg.total_timeout,
            max_connections=cfg.max_concurrency,
        )
        base_url = settings.trigger_api_url or cfg.base_url or DEFAULT_TRIGGER_URL
        version = settings.trigger_api_version or cfg.api_version
        headers = trigger_headers(opening.key, version, opening.agent)
        client, fetcher = build_pool(base_url, headers, limits, transport=opening.transport)
        await stack.enter_async_context(client)
        realtime = None
        if cfg.realtime and version == TRIGGER_CURRENT_API_VERSION:
            # The feed holds a long poll open per shape: a pool of its own, so polls never
            # wait, one connection over the shapes' budget for a snapshot read beside them.
            # A snapshot chunk of a large environment is larger than an API answer.
            feed_limits = replace(
                limits, max_connections=cfg.realtime_connections + 1, max_body=64 * 1024 * 1024
            )
            feed_client = await stack.enter_async_context(
                build_client(base_url, headers, feed_limits, transport=opening.transport)
            )
            realtime = TriggerRealtime(
                Upstream("trigger", feed_client, opening.gate, feed_limits),
                long_poll=cfg.realtime_long_poll,
            )
        return TriggerClient(
            Upstream("trigger", client, opening.gate, limits, fetcher=fetcher),
            environment=environment_of_key(opening.key),
            realtime=realtime,
        )


TRIGGER = TriggerPlugin()

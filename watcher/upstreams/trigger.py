"""Trigger.dev: the secret key as bearer, the API-version header, the key's environment."""

from __future__ import annotations

from contextlib import AsyncExitStack

from watcher.config.model import SourceOptions, SourcesConfig
from watcher.config.settings import DEFAULT_TRIGGER_URL
from watcher.core.events import WatchType
from watcher.core.statuses import Source
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.trigger import TriggerClient, environment_of_key, trigger_headers
from watcher.upstreams.plugin import Credential, Links, Opening

__all__ = ["TRIGGER", "TriggerPlugin"]


class TriggerPlugin:
    """Trigger.dev runs, one by one or discovered by a filter."""

    source = Source.TRIGGER
    credential = Credential("TRIGGER_SECRET_KEY", lambda settings: settings.trigger_secret_key)

    def options(self, sources: SourcesConfig) -> SourceOptions:
        """``sources.trigger``."""
        return sources.trigger

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
        client = await stack.enter_async_context(
            build_client(
                settings.trigger_api_url or cfg.base_url or DEFAULT_TRIGGER_URL,
                trigger_headers(
                    opening.key,
                    settings.trigger_api_version or cfg.api_version,
                    opening.agent,
                ),
                limits,
                transport=opening.transport,
            )
        )
        return TriggerClient(
            Upstream("trigger", client, opening.gate, limits),
            environment=environment_of_key(opening.key),
        )


TRIGGER = TriggerPlugin()

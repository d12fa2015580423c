"""Building the parts from a configuration: credentials check, notifier channels, upstreams."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import assert_never

import httpx

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.config.loader import ConfigError
from watcher.config.model import NotifierConfig, ShardConfig, SourcesConfig, WatcherConfig
from watcher.config.settings import DEFAULT_PARALLEL_URL, DEFAULT_TRIGGER_URL, Settings
from watcher.core.budget import BudgetPolicy
from watcher.core.sharding import Shard, ordinal_of
from watcher.core.statuses import Source
from watcher.daemon.logging import SCRUBBER
from watcher.notify.apprise_sender import AppriseNotifier, url_secrets
from watcher.notify.channel import DeliveryPolicy, NotifierChannel
from watcher.notify.templates import MAX_BODY, MessageRenderer, TemplateSpec
from watcher.sources.gate import SourceGate
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import TriggerClient, environment_of_key, trigger_headers

__all__ = [
    "Upstreams",
    "build_channels",
    "build_gates",
    "build_shard",
    "build_upstreams",
    "check_credentials",
]


def build_shard(config: ShardConfig, hostname: str) -> Shard:
    """This process's shard; without ``index``, the ordinal of a StatefulSet pod name."""
    if config.count == 1:
        return Shard()
    index = config.index
    if index is None:
        index = ordinal_of(hostname)
        if index is None:
            raise ConfigError(
                [
                    f"shard.index is not set and the host name {hostname!r} has no pod "
                    "ordinal (name-N); set shard.index or WATCHER_SHARD=INDEX/COUNT"
                ]
            )
        if index >= config.count:
            raise ConfigError(
                [f"pod ordinal {index} of {hostname!r} is not below shard.count {config.count}"]
            )
    return Shard(index, config.count)


def credential_variable(source: Source) -> str | None:
    """The environment variable that holds ``source``'s key (None: it needs none)."""
    match source:
        case Source.PARALLEL:
            return "PARALLEL_API_KEY"
        case Source.TRIGGER:
            return "TRIGGER_SECRET_KEY"
        case Source.WATCHER:
            return None
        case _:
            assert_never(source)


def _has_key(source: Source, settings: Settings) -> bool:
    match source:
        case Source.PARALLEL:
            return settings.parallel_api_key is not None
        case Source.TRIGGER:
            return settings.trigger_secret_key is not None
        case Source.WATCHER:
            return True
        case _:
            assert_never(source)


def check_credentials(config: WatcherConfig, settings: Settings) -> None:
    """Refuse to start when a watched upstream has no key; name the variables."""
    problems = []
    for source in sorted(config.sources_used()):
        variable = credential_variable(source)
        if variable is None or _has_key(source, settings):
            continue
        credential = variable.lower().replace("_", "-")
        problems.append(
            f"{variable} is not set (needed by the {source.value}_* watches); "
            f"set it, or {variable}_FILE, or the systemd credential {credential}"
        )
    if problems:
        raise ConfigError(problems)


def _fingerprint(cfg: NotifierConfig, url: str, delivery: object) -> str:
    """Identifies a notifier's whole configuration: unchanged ones survive a reload."""
    data = {
        "cfg": cfg.model_dump(mode="json", exclude={"url"}),
        "url": url,
        "delivery": repr(delivery),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _stable_id(cfg: NotifierConfig, url: str) -> str:
    """The outbox's name for a notifier: its ``name``, else a hash of its URL (never the URL)."""
    return cfg.name or "notifier-" + hashlib.sha256(url.encode()).hexdigest()[:16]


def build_channels(
    config: WatcherConfig,
    clock: Clock | None = None,
    source: str = "config",
    reuse: Sequence[NotifierChannel] = (),
) -> list[NotifierChannel]:
    """A delivery channel per configured notifier; a bad URL is a config error naming its index.

    Channels in ``reuse`` whose configuration is unchanged are kept as they are,
    with what they hold (reload).
    """
    clock = clock or SystemClock()
    d = config.delivery
    policy = DeliveryPolicy(
        max_attempts=d.max_attempts,
        retry_for=d.retry_for,
        initial_backoff=d.initial_backoff,
        max_backoff=d.max_backoff,
        queue_size=d.queue_size,
        json_max_bytes=d.json_max_bytes,
    )
    existing = {c.fingerprint: c for c in reuse if c.fingerprint}
    channels = []
    problems = []
    for index, cfg in enumerate(config.notifiers):
        try:
            url = cfg.resolve_url()
            fingerprint = _fingerprint(cfg, url, d)
            if fingerprint in existing:
                channels.append(existing.pop(fingerprint))
                continue
            # Registered before the notifier exists: its URL may fail to parse, and the
            # error must not echo it.
            secrets = url_secrets(url)
            SCRUBBER.add(secrets)
            notifier = AppriseNotifier(
                url,
                timeout=d.timeout,
                connect_timeout=d.connect_timeout,
                name=cfg.name,
                scrub=SCRUBBER.text,
            )
            # The whole URL is registered in case a secret hides where the heuristics
            # do not look; when apprise's private form shows it whole, it holds none of
            # apprise's secrets, and masking it would hide the notifier's name.
            if url in notifier.private_url:
                SCRUBBER.discard([url])
        except ValueError as exc:
            problems.append(f"{source}: notifiers[{index}].url: {exc}")
            continue
        renderer = MessageRenderer(
            family=notifier.family,
            fmt=cfg.format,
            spec=TemplateSpec(cfg.title_template, cfg.body_template, cfg.body_format),
            max_title=notifier.title_maxlen or 250,
            # apprise's own limit for the service (Mattermost 16383, Discord 2000, ...).
            max_body=min(MAX_BODY, notifier.body_maxlen) if notifier.body_maxlen > 0 else MAX_BODY,
        )
        channels.append(
            NotifierChannel(
                notifier,
                frozenset(cfg.tags),
                renderer,
                BudgetPolicy(cfg.max_per_minute / 60.0, cfg.burst),
                policy,
                clock,
                scrub=SCRUBBER.text,
                channel_id=_stable_id(cfg, url),
                fingerprint=fingerprint,
            )
        )
    if problems:
        raise ConfigError(problems)
    return channels


def build_gates(sources: SourcesConfig, clock: Clock, shards: int = 1) -> dict[Source, SourceGate]:
    """One request budget and concurrency cap per upstream.

    The configured budget is the whole deployment's: ``shards`` processes share
    one API key, and so one provider limit, so each takes its share.
    """
    gates = {}
    for source, cfg in ((Source.PARALLEL, sources.parallel), (Source.TRIGGER, sources.trigger)):
        gates[source] = SourceGate(
            source.value,
            BudgetPolicy(
                cfg.requests_per_minute / 60.0 / shards,
                max(1, cfg.burst // shards),
                cfg.reserve // shards,
            ),
            max_concurrency=cfg.max_concurrency,
            clock=clock,
        )
    return gates


class Upstreams:
    """The clients of the upstreams a configuration uses."""

    def __init__(self, parallel: ParallelClient | None, trigger: TriggerClient | None) -> None:
        self.parallel = parallel
        self.trigger = trigger


async def build_upstreams(
    stack: AsyncExitStack,
    config: WatcherConfig,
    settings: Settings,
    gates: dict[Source, SourceGate],
    transport: httpx.AsyncBaseTransport | None = None,
) -> Upstreams:
    """One shared httpx client per upstream in use or with a key, closed with ``stack``.

    An upstream with a key but no watch yet gets its client too: the watch API
    and reloads may add watches of it later.
    """
    cfg = config.sources
    used = config.sources_used()
    if settings.parallel_api_key is not None:
        used.add(Source.PARALLEL)
    if settings.trigger_secret_key is not None:
        used.add(Source.TRIGGER)
    agent = f"run-watcher/{__version__}"
    parallel = trigger = None
    if Source.PARALLEL in used:
        assert settings.parallel_api_key is not None
        headers = {"x-api-key": settings.parallel_api_key.get_secret_value(), "user-agent": agent}
        limits = HttpLimits(
            connect_timeout=cfg.parallel.connect_timeout,
            read_timeout=cfg.parallel.timeout,
            total_timeout=cfg.parallel.total_timeout,
            stream_timeout=cfg.parallel.stream_timeout,
            stream_idle_timeout=cfg.parallel.stream_idle_timeout,
            max_connections=cfg.parallel.max_concurrency,
        )
        base_url = settings.parallel_base_url or cfg.parallel.base_url or DEFAULT_PARALLEL_URL
        # Event streams stay open for long: a pool of their own, so polls never wait for one.
        events_limits = replace(limits, max_connections=max(1, cfg.parallel.max_streams))
        client, events_client = [
            await stack.enter_async_context(
                build_client(base_url, headers, pool_limits, transport=transport)
            )
            for pool_limits in (limits, events_limits)
        ]
        parallel = ParallelClient(
            Upstream("parallel", client, gates[Source.PARALLEL], limits),
            prefix=cfg.parallel.api_prefix,
            max_stream_events=cfg.parallel.max_stream_events,
            events=Upstream("parallel", events_client, gates[Source.PARALLEL], events_limits),
        )
    if Source.TRIGGER in used:
        assert settings.trigger_secret_key is not None
        limits = HttpLimits(
            connect_timeout=cfg.trigger.connect_timeout,
            read_timeout=cfg.trigger.timeout,
            total_timeout=cfg.trigger.total_timeout,
            max_connections=cfg.trigger.max_concurrency,
        )
        client = await stack.enter_async_context(
            build_client(
                settings.trigger_api_url or cfg.trigger.base_url or DEFAULT_TRIGGER_URL,
                trigger_headers(
                    settings.trigger_secret_key.get_secret_value(),
                    settings.trigger_api_version or cfg.trigger.api_version,
                    agent,
                ),
                limits,
                transport=transport,
            )
        )
        trigger = TriggerClient(
            Upstream("trigger", client, gates[Source.TRIGGER], limits),
            environment=environment_of_key(settings.trigger_secret_key.get_secret_value()),
        )
    return Upstreams(parallel, trigger)

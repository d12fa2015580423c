"""Building the parts from a configuration: credentials check, notifier channels, upstreams."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import AsyncExitStack

import httpx

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.config.loader import ConfigError
from watcher.config.model import NotifierConfig, ShardConfig, SourcesConfig, WatcherConfig
from watcher.config.native_notifiers import SenderParts
from watcher.config.settings import Settings
from watcher.core.budget import BudgetPolicy
from watcher.core.sharding import Shard, ordinal_of
from watcher.core.statuses import Source
from watcher.daemon.logging import SCRUBBER
from watcher.notify.apprise_sender import AppriseNotifier, Notifier, url_secrets
from watcher.notify.channel import DeliveryLog, DeliveryPolicy, NotifierChannel, Unlogged
from watcher.notify.incident_refs import IncidentRefs, MemoryRefs
from watcher.notify.templates import MAX_BODY, Family, MessageRenderer, TemplateSpec
from watcher.sources.gate import SourceGate
from watcher.upstreams.plugin import Opening, SourceClient
from watcher.upstreams.registry import PLUGINS, plugin_for

__all__ = [
    "build_channels",
    "build_gates",
    "build_shard",
    "check_credentials",
    "open_clients",
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


def check_credentials(config: WatcherConfig, settings: Settings) -> None:
    """Refuse to start when a watched upstream has no key; name the variables."""
    problems = []
    for source in sorted(config.sources_used()):
        credential = plugin_for(source).credential
        if credential.read(settings) is not None:
            continue
        variable = credential.variable
        problems.append(
            f"{variable} is not set (needed by the {source.value}_* watches); "
            f"set it, or {variable}_FILE, or the systemd credential {credential.systemd_name}"
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
    *,
    log: DeliveryLog | None = None,
    refs: IncidentRefs | None = None,
) -> list[NotifierChannel]:
    """A delivery channel per configured notifier; a bad URL is a config error naming its index.

    Each reports what it sent and gave up on to ``log`` (the daemon's outbox; a
    one-off send keeps nothing). Channels in ``reuse`` whose configuration is
    unchanged are kept as they are, with what they hold (reload). Notifiers that keep
    incidents remember them in ``refs`` (the state file's, or a cluster's).
    """
    clock = clock or SystemClock()
    log = log or Unlogged()
    refs = refs or MemoryRefs()
    d = config.delivery
    policy = DeliveryPolicy(
        max_attempts=d.max_attempts,
        retry_for=d.retry_for,
        initial_backoff=d.initial_backoff,
        max_backoff=d.max_backoff,
        queue_size=d.queue_size,
        json_max_bytes=d.json_max_bytes,
        concurrency=d.concurrency,
    )
    existing = {c.fingerprint: c for c in reuse if c.fingerprint}
    channels = []
    problems = []
    for index, cfg in enumerate(config.notifiers):
        native = cfg.native()
        where = f"{source}: notifiers[{index}]." + (
            "url" if native is None else "pagerduty" if cfg.pagerduty else "slack"
        )
        try:
            url = cfg.resolve_url() if native is None else native.secret()
            fingerprint = _fingerprint(cfg, url, d)
            if fingerprint in existing:
                channels.append(existing.pop(fingerprint))
                continue
            # Registered before the notifier exists: its URL may fail to parse, and the
            # error must not echo it.
            SCRUBBER.add(url_secrets(url) if native is None else [url])
            notifier: Notifier
            family: Family = "chat"
            max_title, max_body = 250, MAX_BODY
            if native is not None:
                if problem := native.problem(url):
                    raise ValueError(problem)
                parts = SenderParts(_stable_id(cfg, url), d.timeout, refs, SCRUBBER.text, clock)
                notifier = native.build(url, cfg.name, parts)
            else:
                apprise_notifier = AppriseNotifier(
                    url,
                    timeout=d.timeout,
                    connect_timeout=d.connect_timeout,
                    name=cfg.name,
                    scrub=SCRUBBER.text,
                )
                # The whole URL is registered in case a secret hides where the heuristics
                # do not look; when apprise's private form shows it whole, it holds none
                # of apprise's secrets, and masking it would hide the notifier's name.
                if url in apprise_notifier.private_url:
                    SCRUBBER.discard([url])
                notifier = apprise_notifier
                family = apprise_notifier.family
                max_title = apprise_notifier.title_maxlen or 250
                # apprise's own limit for the service (Mattermost 16383, Discord 2000, ...).
                if apprise_notifier.body_maxlen > 0:
                    max_body = min(MAX_BODY, apprise_notifier.body_maxlen)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        renderer = MessageRenderer(
            family=family,
            fmt=cfg.format,
            spec=TemplateSpec(cfg.title_template, cfg.body_template, cfg.body_format),
            max_title=max_title,
            max_body=max_body,
        )
        channels.append(
            NotifierChannel(
                notifier,
                frozenset(cfg.tags),
                renderer,
                BudgetPolicy(cfg.max_per_minute / 60.0, cfg.burst),
                policy,
                clock,
                log,
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
    for source, plugin in PLUGINS.items():
        cfg = plugin.options(sources)
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


async def open_clients(
    stack: AsyncExitStack,
    config: WatcherConfig,
    settings: Settings,
    gates: dict[Source, SourceGate],
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[Source, SourceClient]:
    """One client per upstream with a key, closed with ``stack``.

    An upstream with a key but no watch yet gets its client too: the watch API
    and reloads may add watches of it later. (``check_credentials`` has refused
    watches of upstreams without one.)
    """
    agent = f"run-watcher/{__version__}"
    clients: dict[Source, SourceClient] = {}
    for source, plugin in PLUGINS.items():
        key = plugin.credential.read(settings)
        if key is None:
            continue
        opening = Opening(
            config.sources, settings, key.get_secret_value(), gates[source], agent, transport
        )
        clients[source] = await plugin.open(stack, opening)
    return clients

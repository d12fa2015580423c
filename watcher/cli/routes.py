"""``run-watcher routes show`` and ``routes test``: see where events would go."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from watcher.config.loader import ConfigError
from watcher.config.model import WatcherConfig
from watcher.config.notifications import build_routes
from watcher.core.durations import format_duration
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import Matcher, RouteNode, resolve
from watcher.core.silences import Silence, silenced_by
from watcher.core.statuses import Severity, Source, classify

__all__ = ["event_from_mapping", "show", "test"]


def _display_names(config: WatcherConfig) -> list[str]:
    """Each notifier as the daemon's log names it: its ``name``, else its URL with the
    secrets masked (apprise's private form); ``notifiers[i]`` when the URL cannot be read."""
    from watcher.daemon.logging import SCRUBBER
    from watcher.notify.apprise_sender import AppriseNotifier, url_secrets

    names = []
    for index, notifier in enumerate(config.notifiers):
        name = notifier.name or f"notifiers[{index}]"
        if not notifier.name:
            try:
                url = notifier.resolve_url()
                # The output is scrubbed: a token in the URL's path or query is masked.
                SCRUBBER.add([part for part in url_secrets(url) if part != url])
                name += f" {AppriseNotifier(url, timeout=1.0).name}"
            except Exception:  # a URL that needs a missing secret, or that apprise refuses
                pass
        names.append(name)
    return names


def _notifier_names(
    config: WatcherConfig, names: list[str], notify: tuple[str, ...] | None
) -> list[str]:
    return [
        names[index]
        for index, notifier in enumerate(config.notifiers)
        if notify is None or set(notifier.tags) & set(notify)
    ]


def _api_silences(listen: str | None) -> tuple[list[Silence], str]:
    """The API silences of the running daemon (found as ``silence ls`` finds it), and a
    line saying where they came from, or why they could not be read."""
    from watcher.cli import remote
    from watcher.config.notifications import SilenceConfig

    try:
        url = remote.base_url(None, lambda: listen)
        entries = remote.call("GET", f"{url}/silences")["silences"]
    except (remote.RemoteError, KeyError, TypeError) as exc:
        return [], f"silences added through the daemon: not shown ({exc})"
    out: list[Silence] = []
    for entry in entries:
        if entry.get("origin") != "api":
            continue
        try:
            silence = SilenceConfig.model_validate(
                {
                    "name": entry["id"],
                    "match": entry["match"],
                    "ends_at": entry["ends_at"],
                    **({"starts_at": entry["starts_at"]} if entry.get("starts_at") else {}),
                    **({"comment": entry["comment"]} if entry.get("comment") else {}),
                }
            ).silence(0)
        except (ValueError, KeyError, TypeError):
            continue
        out.append(silence)
    return out, f"silences added through the daemon at {url}: {len(out)}"


def _matcher_text(name: str, m: Matcher) -> str:
    parts = sorted(m.equal) + [f"~{p.pattern}" for p in m.regex]
    parts += [f"!{v}" for v in sorted(m.not_equal)] + [f"!~{p.pattern}" for p in m.not_regex]
    return f"{name}={'|'.join(parts)}"


def _settings_text(node: RouteNode) -> str:
    s = node.settings
    text = f"group_by=[{', '.join(s.group_by)}] wait={format_duration(s.group_wait)} interval={format_duration(s.group_interval)}"
    if s.repeat_interval:
        text += f" repeat={format_duration(s.repeat_interval)}"
    if s.send_resolved:
        text += " send_resolved"
    if s.title_template or s.body_template:
        text += " templated"
    return text


def show(config: WatcherConfig) -> int:
    """Print the route tree with the notifiers each route reaches."""
    routes = build_routes(config.routes, config.notifications)
    names = _display_names(config)

    def walk(nodes: tuple[RouteNode, ...], depth: int) -> None:
        for node in nodes:
            match = (
                " ".join(_matcher_text(k, m) for k, m in node.matchers.items()) or "(everything)"
            )
            cont = " continue" if node.continue_ else ""
            notifiers = (
                ", ".join(_notifier_names(config, names, node.settings.notify)) or "(nobody)"
            )
            print(f"{'  ' * depth}{node.id}: match {match}{cont}")
            print(f"{'  ' * depth}  -> {notifiers}  [{_settings_text(node)}]")
            walk(node.children, depth + 1)

    walk(routes, 0)
    api, source = _api_silences(config.http.listen)
    now = datetime.now(UTC)
    for s in [c.silence(i) for i, c in enumerate(config.silences)] + api:
        match = " ".join(_matcher_text(k, m) for k, m in s.matchers.items()) or "(everything)"
        origin = " (api" + (f", until {s.ends_at.isoformat()})" if s.ends_at else ")")
        origin = origin if s in api else ""
        print(f"silence {s.id}{origin}: match {match}{' (active now)' if s.active(now) else ''}")
    print(source)
    return 0


_EVENT_KEYS = frozenset(
    {"kind", "severity", "source", "watch", "subject_id", "from_status", "to_status", "status"}
    | {"details"}
)
_WATCH_KEYS = frozenset({"type", "id", "name", "labels"})


def event_from_mapping(data: Mapping[str, Any]) -> Event:
    """An event from a partial description (fields of the documented JSON shape).

    Unknown keys are refused, as the config loader refuses them: a misspelt
    ``serverity`` must not silently test a different event.
    """
    unknown = [f"event.{k}" for k in data if k not in _EVENT_KEYS]
    watch_part = data.get("watch")
    if isinstance(watch_part, Mapping):
        unknown += [f"event.watch.{k}" for k in watch_part if k not in _WATCH_KEYS]
    if unknown:
        raise ConfigError(
            [
                f"{key}: unknown key (known: {', '.join(sorted(_EVENT_KEYS))}; "
                f"watch: {', '.join(sorted(_WATCH_KEYS))})"
                for key in unknown
            ]
        )
    try:
        watch_data = dict(data.get("watch") or {})
        watch_type = WatchType(watch_data.get("type", "trigger_run"))
        watch = WatchRef(
            watch_type,
            str(watch_data.get("id", "example")),
            watch_data.get("name"),
            freeze({str(k): str(v) for k, v in (watch_data.get("labels") or {}).items()}),
        )
        source = Source(data.get("source", watch_type.source.value))
        kind = EventKind(data.get("kind", "run.status_changed"))
        to_status = str(data.get("to_status", data.get("status", "FAILED")))
        severity = (
            Severity(data["severity"])
            if "severity" in data
            else classify(source, to_status).severity
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError([f"event: {exc}"]) from None
    return Event(
        event_id="evt_routes_test",
        kind=kind,
        severity=severity,
        source=source,
        watch=watch,
        subject_id=str(data.get("subject_id", watch.id)),
        from_status=data.get("from_status"),
        to_status=to_status,
        observed_at=datetime.now(UTC),
        details=freeze(dict(data.get("details") or {})),
    )


def _load_event(text: str | None, path: Path | None) -> Event:
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read event file: {exc.strerror}"]) from None
    try:
        data = json.loads(text or "{}")
    except ValueError:
        try:
            data = yaml.safe_load(text or "{}")
        except yaml.YAMLError as exc:
            raise ConfigError([f"event: neither JSON nor YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            ["event: expected a mapping such as {kind: ..., severity: ..., watch: {...}}"]
        )
    return event_from_mapping(data)


def test(config: WatcherConfig, event_text: str | None, event_file: Path | None) -> int:
    """Print which routes and notifiers an event reaches. Exit 1 when it reaches none."""
    event = _load_event(event_text, event_file)
    routes = build_routes(config.routes, config.notifications)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(event.watch.labels.items()))
    print(
        f"event: {event.kind.value} severity={event.severity.value} source={event.source.value} "
        f"watch={event.watch.key}{f' labels {labels}' if labels else ''} to_status={event.to_status}"
    )
    api, source = _api_silences(config.http.listen)
    silence = silenced_by(
        [s.silence(i) for i, s in enumerate(config.silences)] + api, event, datetime.now(UTC)
    )
    print(source)
    if silence is not None:
        print(f"silenced now by {silence.id}: it would not be sent")
    reached: list[str] = []
    names = _display_names(config)
    for node in resolve(routes, event):
        hit = _notifier_names(config, names, node.settings.notify)
        print(f"{node.id} -> {', '.join(hit) or '(nobody)'}  [{_settings_text(node)}]")
        reached += [n for n in hit if n not in reached]
    if not reached:
        print("no notifier: the event would not be sent")
        return 1
    print(f"notifiers: {', '.join(reached)}")
    return 0 if silence is None else 1

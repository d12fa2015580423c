"""Commands that talk to a running daemon over its HTTP endpoints.

``status``, ``watch ls|add|rm``, ``silence``, ``incidents``, ``ack``, ``reload`` and
``health``. The daemon's address
comes from ``--url``, else ``$WATCHER_URL``, else ``$WATCHER_HTTP_LISTEN`` or the
config file's ``http.listen`` (a wildcard address is reached on loopback); the
token from ``$WATCHER_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from watcher.cli.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from watcher.cli.table import table
from watcher.config.operations import DEFAULT_LISTEN, split_listen
from watcher.core.durations import format_duration

__all__ = [
    "RemoteError",
    "ack",
    "base_url",
    "call",
    "cluster",
    "health",
    "incidents",
    "reload",
    "status",
    "watch_add",
    "watch_ls",
    "watch_rm",
]

_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class RemoteError(Exception):
    """The daemon could not be asked, or said no; ``str()`` is for the user."""


def base_url(url: str | None, listen: Callable[[], str | None]) -> str:
    """The daemon's base URL; ``listen`` reads ``http.listen`` from the config, if any
    (the default address when there is no config)."""
    url = url or os.environ.get("WATCHER_URL")
    if url:
        return url.rstrip("/")
    address = os.environ.get("WATCHER_HTTP_LISTEN") or listen()
    if not address:
        raise RemoteError(
            "the daemon's HTTP endpoints are off (http.listen: off in its config): "
            "give --url (or WATCHER_URL) of one that listens"
        )
    host, port = split_listen(address)
    # A wildcard address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _headers() -> dict[str, str]:
    token = os.environ.get("WATCHER_API_TOKEN", "").strip()
    return {"authorization": f"Bearer {token}"} if token else {}


def call(method: str, url: str, body: object | None = None) -> Any:
    """One request to the daemon: its JSON answer; :class:`RemoteError` saying why not."""
    try:
        with httpx.Client(timeout=_TIMEOUT, trust_env=False) as client:
            response = client.request(method, url, json=body, headers=_headers())
    except httpx.HTTPError as exc:
        hint = ""
        if url.startswith(f"http://{DEFAULT_LISTEN}/"):
            hint = (
                " (the default address: is the daemon running on this host? Else give "
                "--url, WATCHER_URL, or --config of the daemon's config file)"
            )
        raise RemoteError(f"cannot reach the daemon at {url}: {exc}{hint}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400:
        problems = payload.get("problems") if isinstance(payload, dict) else None
        text = "; ".join(problems) if problems else (payload or response.text)
        raise RemoteError(f"{method} {url}: HTTP {response.status_code}: {text}")
    return payload


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%SZ")


def _print_watches(watches: Sequence[dict[str, Any]]) -> None:
    rows = [["WATCH", "NAME", "ORIGIN", "STATE", "DETAIL", "LAST OK", "POLLS", "ERRORS"]]
    for w in watches:
        rows.append(
            [
                str(w["key"]),
                str(w.get("name") or "-"),
                str(w.get("origin", "config")),
                str(w["state"]),
                str(w.get("detail") or ""),
                _when(w.get("last_ok_at")),
                str(w.get("polls", 0)),
                str(w.get("errors", 0)),
            ]
        )
    print(table(rows))
    for w in watches:
        if w.get("state") == "error" and w.get("problem"):
            print(f"error: {w['key']}: {w['problem']}")


def _realtime_line(feed: dict[str, Any]) -> str:
    """The realtime feed in one line: what it covers, on how many connections, what not."""
    if not feed.get("streaming"):
        return f"realtime feed: not delivering; {feed.get('uncovered', 0)} runs polled"
    extra = feed.get("extra_shapes") or []
    return (
        f"realtime feed: {feed.get('covered', 0)} runs covered on "
        f"{feed.get('connections', 0)} of {feed.get('connection_budget', 0)} connections "
        f"({len(extra)} extra shapes); {feed.get('uncovered', 0)} runs no shape holds, polled"
    )


def status(url: str) -> int:
    """Print the running daemon's watches; exit 1 if any cannot see upstream."""
    answer = call("GET", f"{url}/watches")
    watches = answer["watches"]
    if not watches:
        print("no watches")
        return EXIT_OK
    _print_watches(watches)
    if (feed := answer.get("realtime")) is not None:
        print(_realtime_line(feed))
    return EXIT_FAILED if any(w["state"] == "error" for w in watches) else EXIT_OK


def cluster(url: str, as_json: bool) -> int:
    """Print the cluster as this replica sees it; exit 1 unless it is a member in good
    standing (degraded, lapsed)."""
    view = call("GET", f"{url}/cluster")
    if as_json:
        print(json.dumps(view, indent=2))
    else:
        print(f"this replica: {view['name']} ({view['standing']}), Redis {view['redis']}")
        if view.get("error"):
            print(f"error: {view['error']}")
        rows = [
            [
                m["name"] + (" (this one)" if m["name"] == view["name"] else ""),
                str(m.get("owned", "?")),
                _ago(m.get("renewed_at")),
                str(m.get("host", "")),
            ]
            for m in view["members"]
        ]
        print(table([["MEMBER", "OWNS", "RENEWED", "HOST"], *rows]))
    return EXIT_OK if view["standing"] == "member" else EXIT_FAILED


def _ago(when: object) -> str:
    if not isinstance(when, int | float):
        return "?"
    return f"{max(0.0, time.time() - when):.1f}s ago"


def watch_ls(url: str, as_json: bool) -> int:
    """List the watches (``--json``: as the daemon returns them)."""
    watches = call("GET", f"{url}/watches")["watches"]
    if as_json:
        print(json.dumps(watches, indent=2))
    elif watches:
        _print_watches(watches)
    else:
        print("no watches")
    return EXIT_OK


def watch_add(
    url: str,
    kind: str,
    ident: str | None,
    *,
    name: str | None,
    labels: Sequence[str],
    expire_after: str | None,
    extra: str | None,
) -> int:
    """``POST /watches``: the entry from the options, ``--json`` merged in."""
    entry: dict[str, Any] = {"type": kind}
    if ident:
        entry["id"] = ident
    if name:
        entry["name"] = name
    if labels:
        pairs = [label.partition("=") for label in labels]
        bad = [label for label, (_, sep, _) in zip(labels, pairs, strict=True) if not sep]
        if bad:
            print(f"run-watcher: --label {bad[0]!r}: use NAME=VALUE", file=sys.stderr)
            return EXIT_CONFIG
        entry["labels"] = {k: v for k, _, v in pairs}
    if expire_after:
        entry["expire_after"] = expire_after
    if extra:
        try:
            more = json.loads(extra)
        except ValueError as exc:
            print(f"run-watcher: --json: not JSON: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if not isinstance(more, dict):
            print("run-watcher: --json: must be an object", file=sys.stderr)
            return EXIT_CONFIG
        entry.update(more)
    answer = call("POST", f"{url}/watches", entry)
    verb = "added" if answer["created"] else "updated"
    watch = answer["watch"]
    expires = watch.get("expires_at")
    print(f"{verb} {watch['key']}" + (f" (expires {_when(expires)})" if expires else ""))
    return EXIT_OK


def watch_rm(url: str, kind: str, ident: str) -> int:
    """``DELETE /watches/{type}/{id}``."""
    answer = call("DELETE", f"{url}/watches/{kind}/{ident}")
    print(f"removed {answer['removed']}")
    return EXIT_OK


def reload(url: str) -> int:
    """``POST /-/reload``: as SIGHUP, but with the answer."""
    answer = call("POST", f"{url}/-/reload")
    print(f"reloaded: {answer['watches']} watches in the config file")
    return EXIT_OK


def health(url: str, ready: bool) -> int:
    """Exit 0 when ``/healthz`` (``--ready``: ``/readyz``) says so; for HEALTHCHECK and probes."""
    path = "/readyz" if ready else "/healthz"
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0), trust_env=False) as client:
            response = client.get(f"{url}{path}")
    except httpx.HTTPError as exc:
        print(f"unhealthy: cannot reach {url}{path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if response.status_code != 200:
        print(
            f"unhealthy: {path} answered {response.status_code}: {response.text}", file=sys.stderr
        )
        return EXIT_FAILED
    print(f"ok: {path}")
    return EXIT_OK


def silence_ls(url: str) -> int:
    """The silences, from the file and the API."""
    silences = call("GET", f"{url}/silences")["silences"]
    if not silences:
        print("no silences")
        return EXIT_OK
    rows = [["ID", "ORIGIN", "ACTIVE", "ENDS", "MATCH", "COMMENT"]]
    for s in silences:
        rows.append(
            [
                str(s["id"]),
                str(s["origin"]),
                "yes" if s["active"] else "no",
                str(s.get("ends_at") or "-"),
                json.dumps(s["match"], separators=(",", ":")),
                str(s.get("comment") or ""),
            ]
        )
    print(table(rows))
    return EXIT_OK


def silence_add(
    url: str, matches: Sequence[str], duration: str | None, until: str | None, comment: str | None
) -> int:
    """``POST /silences``: ``--match field=value[,value]`` (repeatable), for a time."""
    match: dict[str, Any] = {}
    for item in matches:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"run-watcher: --match {item!r}: use FIELD=VALUE[,VALUE...]", file=sys.stderr)
            return EXIT_CONFIG
        values = value.split(",")
        match[key] = values if len(values) > 1 else value
    entry: dict[str, Any] = {"match": match}
    if until:
        entry["ends_at"] = until
    else:
        entry["duration"] = duration or "1h"
    if comment:
        entry["comment"] = comment
    silence = call("POST", f"{url}/silences", entry)["silence"]
    print(f"added {silence['id']} until {silence['ends_at']}")
    return EXIT_OK


def silence_rm(url: str, ident: str) -> int:
    """``DELETE /silences/{id}``."""
    print(f"removed {call('DELETE', f'{url}/silences/{ident}')['removed']}")
    return EXIT_OK


def _open_for(stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    return format_duration(max(0.0, seconds))


def incidents(url: str, open_only: bool, as_json: bool) -> int:
    """``GET /incidents``: open ones (oldest first), then the latest resolved."""
    found = call("GET", f"{url}/incidents" + ("?open=true" if open_only else ""))["incidents"]
    if as_json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    if not found:
        print("no open incidents" if open_only else "no incidents")
        return EXIT_OK
    rows = [["ID", "STATE", "SEVERITY", "OPEN FOR", "BY", "ESCALATED", "SUMMARY"]]
    for i in found:
        ack = i.get("acknowledged") or {}
        state = str(i["state"]) + (" (flapping)" if i.get("flapping") else "")
        took = i.get("duration_seconds")
        rows.append(
            [
                str(i["id"]),
                state,
                str(i["severity"]),
                format_duration(float(took)) if took is not None else _open_for(i.get("opened_at")),
                str(ack.get("by") or "-"),
                str(len(i.get("escalated") or ())),
                str(i["summary"])[:80],
            ]
        )
    print(table(rows))
    return EXIT_OK


def ack(url: str, ref: str, by: str | None, note: str | None, undo: bool) -> int:
    """``POST /incidents/{id}/ack`` (``--undo``: ``DELETE``)."""
    if undo:
        view = call("DELETE", f"{url}/incidents/{ref}/ack")["incident"]
        print(f"{view['id']}: open again (reminders and escalation resume)")
        if view.get("pending"):
            print(f"  ({view['pending']})")
        return EXIT_OK
    who = by or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not who:
        print("run-watcher: ack: say who you are with --by NAME", file=sys.stderr)
        return EXIT_CONFIG
    body: dict[str, Any] = {"by": who}
    if note:
        body["note"] = note
    view = call("POST", f"{url}/incidents/{ref}/ack", body)["incident"]
    print(f"{view['id']}: acknowledged by {who}: {view['summary']}")
    if view.get("pending"):
        print(f"  ({view['pending']})")
    return EXIT_OK

"""Prometheus metrics, through ``prometheus-client`` and a registry of the daemon's own.

Two kinds: counters and histograms fed as things happen (requests, polls,
events), and values read at scrape time from the objects that already keep them
(watches by state, notifier counters and queues, the state file), so the hot
paths pay nothing for them. Notifiers appear by their private name
(``slack://T000/B.../X...``): tokens never reach a label.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher import __version__
from watcher.core.events import Event
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.daemon.views import DaemonView, WatchCounts, tally_watches

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


_Pair = tuple[Counter, Histogram]


def _pair(
    cache: dict[tuple[str, str], _Pair],
    counter: Counter,
    histogram: Histogram,
    source: str,
    label: str,
) -> _Pair:
    """``counter``'s child for (source, label) and ``histogram``'s for source, each
    labelled once: ``labels()`` per poll was 2% of a poll's CPU."""
    key = (source, label)
    pair = cache.get(key)
    if pair is None:
        pair = cache[key] = (counter.labels(source, label), histogram.labels(source))
    return pair


class Metrics:
    """The daemon's metrics; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, daemon: DaemonView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "run_watcher_upstream_requests",
            "Requests to the upstream APIs, by source and HTTP status code (timeout, error: no response).",
            ["source", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "run_watcher_upstream_request_duration_seconds",
            "Time for one upstream request, body included.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.polls = Counter(
            "run_watcher_polls",
            "Polls of watches, by source and outcome (ok, or the problem kind).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "run_watcher_poll_duration_seconds",
            "Time for one poll of a watch: its requests and the diff.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "run_watcher_events",
            "Events detected, by kind and severity.",
            ["kind", "severity"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "run_watcher_event_loop_lag_seconds",
            "How late a 100 ms timer of the event loop fires: the daemon is too busy when this grows.",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self._collector = _DaemonCollector(daemon)
        self.registry.register(self._collector)
        self._request_children: dict[tuple[str, str], _Pair] = {}
        self._poll_children: dict[tuple[str, str], _Pair] = {}

    def request(self, source: str, code: str, seconds: float) -> None:
        """One upstream request finished (an :data:`~watcher.sources.http.RequestObserver`)."""
        count, duration = _pair(
            self._request_children, self.requests, self.request_seconds, source, code
        )
        count.inc()
        duration.observe(seconds)

    def poll(self, rt: WatchRuntime, seconds: float) -> None:
        """One poll finished."""
        last = rt.state.health.last_problem
        outcome = "ok" if rt.state.health.healthy or last is None else last.kind.value
        count, duration = _pair(
            self._poll_children, self.polls, self.poll_seconds, rt.source.value, outcome
        )
        count.inc()
        duration.observe(seconds)

    def published(self, events: Sequence[Event]) -> None:
        """Events went to the dispatcher."""
        for (kind, severity), n in Tally((e.kind.value, e.severity.value) for e in events).items():
            self.events.labels(kind, severity).inc(n)

    def render(self, counts: WatchCounts | None = None) -> bytes:
        """The exposition text; ``counts`` from :func:`~watcher.daemon.views.count_watches`
        (counted here, in one go, without them)."""
        self._collector.counts = counts
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.counts = None


class _DaemonCollector(Collector):
    """Values read from the daemon at scrape time."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.counts: WatchCounts | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        info = GaugeMetricFamily(
            "run_watcher_build_info", "Version of run-watcher; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "run_watcher_ready", "1 once every watch was polled once.", value=int(d.is_ready)
        )
        yield CounterMetricFamily(
            "run_watcher_reloads", "Configuration reloads applied.", value=d.reloads
        )
        yield GaugeMetricFamily(
            "run_watcher_start_time_seconds", "Unix time the daemon started.", value=d.started_at
        )
        yield from self._watches()
        yield from self._notifiers()
        durability = GaugeMetricFamily(
            "run_watcher_state_file_healthy",
            "1 while the state file takes writes; 0 when durability is lost; absent without one.",
        )
        if d.durability.enabled:
            durability.add_metric([], int(d.durability.healthy))
        yield durability
        yield from self._cluster()
        yield CounterMetricFamily(
            "run_watcher_events_silenced",
            "Events a silence held back.",
            value=d.dispatcher.silenced,
        )
        yield CounterMetricFamily(
            "run_watcher_events_unrouted",
            "Events that reached no notifier.",
            value=d.dispatcher.unrouted,
        )
        incidents = GaugeMetricFamily(
            "run_watcher_incidents", "Open incidents, by state.", labels=["state"]
        )
        open_now = list(d.dispatcher.conditions.open.values())
        acked = sum(c.ack is not None for c in open_now)
        incidents.add_metric(["open"], len(open_now) - acked)
        incidents.add_metric(["acknowledged"], acked)
        yield incidents
        yield CounterMetricFamily(
            "run_watcher_flapping_held",
            "Opening and resolved messages held back while their condition flapped.",
            value=d.dispatcher.held,
        )

    def _cluster(self) -> Iterator[Metric]:
        cluster = self.daemon.cluster
        if cluster is None:
            return
        yield GaugeMetricFamily(
            "run_watcher_cluster_members",
            "Live members of the cluster, as the last renewal listed them.",
            value=len(cluster.membership.members),
        )
        yield GaugeMetricFamily(
            "run_watcher_cluster_owned_watches",
            "Watches whose lease this replica holds.",
            value=len(cluster.held),
        )
        standing = GaugeMetricFamily(
            "run_watcher_cluster_standing",
            "1 for this replica's standing: member, lapsed, fail-open-held, fail-open-all.",
            labels=["standing"],
        )
        now = cluster.standing()
        for each in type(now):
            standing.add_metric([each.value], int(each is now))
        yield standing
        yield CounterMetricFamily(
            "run_watcher_cluster_takeovers",
            "Watches taken over with the state another replica left.",
            value=cluster.takeovers,
        )
        claims = CounterMetricFamily(
            "run_watcher_cluster_log_claims",
            "Notification log claims by outcome: sent (this replica sends), peer (another "
            "sent it: dropped), busy (another is sending it: retried), partial, unavailable "
            "(Redis down: sent anyway).",
            labels=["outcome"],
        )
        for outcome in ("sent", "peer", "busy", "partial", "unavailable"):
            claims.add_metric([outcome], cluster.claims[outcome])
        yield claims
        yield CounterMetricFamily(
            "run_watcher_cluster_redis_calls",
            "Round trips to Redis (a script or a pipeline is one).",
            value=cluster.redis.commands,
        )
        yield CounterMetricFamily(
            "run_watcher_cluster_refused_writes",
            "State writes the lease's epoch refused (the watch had moved on).",
            value=cluster.refused_writes,
        )

    def _watches(self) -> Iterator[Metric]:
        watcher = self.daemon.watcher
        states = GaugeMetricFamily(
            "run_watcher_watches",
            "Watches (and runs discovered by trigger_runs) by source, kind and state.",
            labels=["source", "kind", "state"],
        )
        last_ok = GaugeMetricFamily(
            "run_watcher_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll, by source.",
            labels=["source"],
        )
        queued = GaugeMetricFamily(
            "run_watcher_polls_due",
            "Polls due now and waiting for a worker or the rate budget, by source.",
            labels=["source"],
        )
        if watcher is not None:
            tally = self.counts
            if tally is None:
                tally = tally_watches(list(watcher.registry.values()))
            for source in watcher.schedulers:
                for kind in Kind:
                    for state in ("pending", "ok", "error", "finished"):
                        states.add_metric(
                            [source.value, kind.value, state],
                            tally.get((source.value, kind.value, state), 0),
                        )
            for source, stamp in watcher.last_ok_wall.items():
                last_ok.add_metric([source.value], stamp)
            for source, scheduler in watcher.schedulers.items():
                queued.add_metric([source.value], scheduler.backlog())
        yield states
        yield last_ok
        yield queued
        streams = watcher.streams if watcher is not None else None
        if streams is not None:
            yield GaugeMetricFamily(
                "run_watcher_group_streams_open",
                "Parallel group event streams held now (open, or reconnecting).",
                value=streams.open,
            )
            yield CounterMetricFamily(
                "run_watcher_group_stream_connects",
                "Connections made to group event streams (first ones and reconnects).",
                value=streams.connects,
            )
            yield CounterMetricFamily(
                "run_watcher_group_stream_fallbacks",
                "Times a group went back to polling: its stream was refused or kept failing.",
                value=streams.fallbacks,
            )
        feed = watcher.realtime if watcher is not None else None
        if feed is not None:
            yield GaugeMetricFamily(
                "run_watcher_realtime_covered_runs",
                "Trigger.dev runs the realtime feed holds now (polled only to cross-check).",
                value=len(feed.covered),
            )
            yield GaugeMetricFamily(
                "run_watcher_realtime_connections",
                "Realtime shapes delivering now: the environment's, plus extra shapes (by tag "
                "or per run) for the runs it leaves out (sources.trigger.realtime_connections).",
                value=(1 if feed.streaming() else 0) + feed.extra.live,
            )
            yield GaugeMetricFamily(
                "run_watcher_realtime_uncovered_runs",
                "Followed Trigger.dev runs in mode auto that no realtime shape holds (over the "
                "cap or out of the window, beyond the connection budget): polled.",
                value=feed.uncovered(),
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_limited",
                "Extra realtime connections the server refused (429: the plan's limit).",
                value=feed.extra.limited,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_baselines",
                "Runs whose first sight came from a realtime row, not an /api read.",
                value=feed.baselines,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_sessions",
                "Realtime feed sessions (a snapshot, then long polls).",
                value=feed.sessions,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_fallbacks",
                "Times the realtime feed fell back to polling: refused, or kept failing.",
                value=feed.fallbacks,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_changes",
                "Run changes seen on the realtime feed that polled the run at once "
                "(an outcome, a retry, a new attempt).",
                value=feed.changes,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_applied",
                "Run changes the realtime feed told in full, applied without an /api read.",
                value=feed.applied,
            )
            yield CounterMetricFamily(
                "run_watcher_realtime_cross_checks",
                "Batched cross-checks of the runs the feed holds (one list pass each).",
                value=feed.checks,
            )

    def _notifiers(self) -> Iterator[Metric]:
        notifications = CounterMetricFamily(
            "run_watcher_notifications",
            "Notification messages by notifier and result: sent; retried (an attempt failed, "
            "another follows); failed (given up after retries).",
            labels=["notifier", "result"],
        )
        events = CounterMetricFamily(
            "run_watcher_notification_events",
            "Events by notifier and fate: sent; undeliverable (retries exhausted); dropped "
            "(backlog full).",
            labels=["notifier", "result"],
        )
        queue = GaugeMetricFamily(
            "run_watcher_notification_queue",
            "Events waiting for a notifier (grouping, rate limit, retries).",
            labels=["notifier"],
        )
        for ch in self.daemon.channels:
            notifications.add_metric([ch.name, "sent"], ch.sent_messages)
            notifications.add_metric([ch.name, "retried"], ch.failed_attempts - ch.failed_messages)
            notifications.add_metric([ch.name, "failed"], ch.failed_messages)
            events.add_metric([ch.name, "sent"], ch.sent_events)
            events.add_metric([ch.name, "undeliverable"], ch.undeliverable)
            events.add_metric([ch.name, "dropped"], ch.dropped)
            queue.add_metric([ch.name], ch.queued())
        yield notifications
        yield events
        yield queue

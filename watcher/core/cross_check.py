"""The realtime feed's cross-check: the runs it covers, confirmed against the API in pages.

The feed says what changed; the cross-check makes sure a lost update cannot leave a
watch wrong for long. Polling each covered run costs one ``/api`` request per run (at
2,000 runs every 2 hours, 1,000 requests an hour); listing the environment's runs
created since the oldest of them costs one request per 100 runs of the environment.
:func:`plan_check` chooses the list when it is the cheaper (at most half the requests
of polling each run) and says how far back to list; :func:`judge` compares what the
list says with what each watch last saw: a run that agrees waits for the next
cross-check, one that differs is polled (the list lacks the error and the attempt), and
one the list did not reach keeps its own poll.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from watcher.core.snapshots import RunSnapshot

__all__ = ["PAGE_SIZE", "CheckPlan", "Judgement", "judge", "plan_check"]

PAGE_SIZE = 100
"""Runs a page of ``GET /api/v1/runs`` holds at most."""


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """One list pass: runs created in the last ``period`` (``125m``), ``max_pages`` pages."""

    period: str
    max_pages: int


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one list pass found of the covered runs, by run id."""

    confirmed: tuple[str, ...]
    moved: tuple[str, ...]
    unseen: tuple[str, ...]


def plan_check(created: Sequence[datetime], shape_size: int, now: datetime) -> CheckPlan | None:
    """The list pass that checks runs created at ``created``, in a shape of
    ``shape_size`` runs; None when polling each run is as cheap (few runs, or a large
    environment whose listing would read many pages of runs nobody follows)."""
    if not created:
        return None
    max_pages = len(created) // 2
    if max_pages < 1 or math.ceil(shape_size / PAGE_SIZE) > max_pages:
        return None
    minutes = math.ceil((now - min(created)).total_seconds() / 60) + 1
    return CheckPlan(period=f"{max(1, minutes)}m", max_pages=max_pages)


def judge(known: Mapping[str, RunSnapshot], listed: Iterable[RunSnapshot]) -> Judgement:
    """Compare each covered run's last known snapshot with the list's."""
    found = {run.run_id: run for run in listed if run.run_id in known}
    confirmed: list[str] = []
    moved: list[str] = []
    for run_id, seen in known.items():
        run = found.get(run_id)
        if run is None:
            continue
        same_time = run.updated_at is None or run.updated_at == seen.updated_at
        (confirmed if run.status == seen.status and same_time else moved).append(run_id)
    unseen = tuple(run_id for run_id in known if run_id not in found)
    return Judgement(tuple(confirmed), tuple(moved), unseen)

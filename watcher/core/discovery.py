"""Which discovered runs a ``trigger_runs`` watch follows, announces or leaves. Pure.

A discovery pass (``core/watch.py``: :func:`~watcher.core.watch.step_discovery`)
says which runs are new and which form the first pass's baseline; this decides what
the daemon does with them:

- a baseline run still running is followed silently (its later changes are news);
  one already finished is not followed (its outcome is history);
- a new run is followed and announced;
- runs another shard owns are left to it;
- beyond ``max_runs`` followed at once, a new run is announced from the listing but
  not followed, and the operator is told; a baseline run is only told about.
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.core.sharding import Ownership
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import classify
from watcher.core.watch import DiscoveryStep

__all__ = ["Adoption", "plan_adoption"]


@dataclass(frozen=True, slots=True)
class Adoption:
    """What to do with the runs of one discovery pass."""

    follow: tuple[tuple[RunSnapshot, bool], ...] = ()
    """Runs to follow as watches of their own, each with whether to announce it."""
    announce_only: tuple[RunSnapshot, ...] = ()
    """New runs over ``max_runs``: announced from the listing, not followed."""
    over_cap: tuple[RunSnapshot, ...] = ()
    """Every run left unfollowed because of ``max_runs`` (to tell the operator)."""


def plan_adoption(
    step: DiscoveryStep, *, shard: Ownership, following: int, max_runs: int
) -> Adoption:
    """Plan a pass's adoptions for a watch that follows ``following`` runs already."""
    room = max_runs - following
    follow: list[tuple[RunSnapshot, bool]] = []
    announce_only: list[RunSnapshot] = []
    over: list[RunSnapshot] = []
    for run in step.baseline_runs:
        if classify(run.source, run.status).terminal or not shard.adopts(run.run_id):
            continue
        if room > 0:
            follow.append((run, False))
            room -= 1
        else:
            over.append(run)
    for run in step.new_runs:
        if not shard.adopts(run.run_id):
            continue
        if room > 0:
            follow.append((run, True))
            room -= 1
        else:
            announce_only.append(run)
            over.append(run)
    return Adoption(tuple(follow), tuple(announce_only), tuple(over))

"""A group's event stream folded into the observations polling would have made.

Parallel's ``/events`` stream sends ``task_group_status`` events (the counts) and
``task_run.state`` events (a run reached a non-active status), in an order the
docs do not promise, often several for one change upstream. Events are buffered
until the stream is quiet for :data:`SETTLE` seconds (at most :data:`MAX_HOLD`
after the first): a status and the run events that name its failures are then
applied together, as one poll would have read them, and a burst of changes
makes one step, not one per event. So stream and poll mode feed the same pure
step (:func:`~watcher.core.watch.step_group`) and make the same events, with
the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus
from watcher.core.watch import WatchState, is_older

__all__ = ["MAX_HOLD", "SETTLE", "StreamBuffer", "flush", "hold", "take"]

SETTLE = 0.1
"""Apply the buffer once the stream has been quiet this many seconds."""
MAX_HOLD = 0.4
"""Apply the buffer at the latest this many seconds after its first event."""


@dataclass(frozen=True, slots=True)
class StreamBuffer:
    """Events read from the stream and not applied yet."""

    status: GroupSnapshot | None = None
    failed: tuple[FailedRun, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing waits to be applied."""
        return self.status is None and not self.failed


def _known(state: WatchState) -> GroupSnapshot | None:
    return state.snapshot if isinstance(state.snapshot, GroupSnapshot) else None


def take(
    buffer: StreamBuffer, state: WatchState, item: GroupSnapshot | RunSnapshot
) -> StreamBuffer:
    """Add one parsed event to the buffer.

    Statuses older than what the watch has seen are dropped (a replay from the
    start of the stream); so are run events older than the group's last known
    modification, whose failures the counts (and the runs stream) already cover.
    Runs that reached another status than ``failed`` need no naming: the counts
    carry them.
    """
    known = _known(state)
    if isinstance(item, GroupSnapshot):
        if known is not None and is_older(item.modified_at, known.modified_at):
            return buffer
        return replace(buffer, status=item)
    if item.status != ParallelStatus.FAILED:
        return buffer
    if known is not None and _covered(item.updated_at, known.modified_at):
        return buffer
    if any(r.run_id == item.run_id for r in buffer.failed):
        return buffer
    return replace(buffer, failed=(*buffer.failed, FailedRun.of(item)))


def _covered(run_at: str | None, group_at: str | None) -> bool:
    """A run change at ``run_at`` is in a group status modified at ``group_at`` or later."""
    if run_at is None or group_at is None:
        return False
    return not is_older(group_at, run_at)


def hold(buffered_for: float | None) -> float | None:
    """How long to wait for more events before applying (None: nothing buffered)."""
    if buffered_for is None:
        return None
    return max(0.0, min(SETTLE, MAX_HOLD - buffered_for))


def flush(buffer: StreamBuffer, state: WatchState) -> GroupObservation | None:
    """The observation to apply: the buffered status (or the last known one) and the
    failed runs named; None when there is nothing to apply."""
    snapshot = buffer.status or _known(state)
    if snapshot is None or buffer.empty:
        return None
    return GroupObservation(snapshot, buffer.failed)

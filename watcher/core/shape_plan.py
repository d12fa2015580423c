"""Which extra realtime shapes cover the runs the environment's shape leaves out (pure).

The provider's newer backend caps a multi-run shape at 1,000 runs and says nothing of
the rest; runs created before the window are not in it either. Each extra shape is one
long-poll connection, and the plan's concurrent-connection limit (Free 10, Hobby 50,
Pro 500+, shared with the user's own application) bounds how many there may be. So:

1. **Tag shapes** (``/realtime/v1/runs?tags=T``, ``subscribeToRunsWithTag``): the tag
   held by the most uncovered runs first, while it names at least two of them and no
   more than the cap (a shape that would be capped itself covers nothing for sure).
   A tag whose shape came back capped, or that did not hold a run it was chosen for
   (created before the window), is not chosen for that run again: the caller drops it
   from the run's tags.
2. **Run shapes** (``/realtime/v1/runs/{id}``, ``subscribeToRun``): one connection per
   run, for the runs that matter most (``rank``: a ``trigger_run`` watch before a run a
   ``trigger_runs`` watch follows, a recently active run before an idle one).
3. The rest stay polled, and are counted.

Shapes that already exist are kept where they still serve (a rank tie goes to them):
replanning must not churn connections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Candidate", "ShapePlan", "ShapeSpec", "plan_shapes"]


@dataclass(frozen=True, slots=True, order=True)
class ShapeSpec:
    """One extra shape: every run with the tag ``key`` (in the window), or the run ``key``."""

    kind: Literal["tag", "run"]
    key: str

    @property
    def label(self) -> str:
        """How logs and metrics name it (never more than a tag or a run id)."""
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A followed run no shape holds yet."""

    run_id: str
    tags: tuple[str, ...] = ()
    """The run's tags a tag shape may still cover it by."""
    rank: int = 0
    """Lower matters more: it gets a connection of its own first."""
    known: bool = True
    """The watch has seen the run (so its tags are known)."""


@dataclass(frozen=True, slots=True)
class ShapePlan:
    """The extra shapes to hold, which shape each covered run is expected in, the rest."""

    shapes: tuple[ShapeSpec, ...]
    expected: Mapping[str, ShapeSpec]
    uncovered: tuple[str, ...]


def plan_shapes(
    candidates: Iterable[Candidate],
    slots: int,
    *,
    cap: int,
    current: Collection[ShapeSpec] = (),
    refused_tags: Collection[str] = (),
) -> ShapePlan:
    """At most ``slots`` shapes that cover the most (and most important) ``candidates``."""
    remaining = {c.run_id: c for c in candidates}
    shapes: list[ShapeSpec] = []
    expected: dict[str, ShapeSpec] = {}
    held = set(current)
    while len(shapes) < slots and remaining:
        counts = Counter(
            tag for c in remaining.values() for tag in set(c.tags) if tag not in refused_tags
        )
        choices = [(n, tag) for tag, n in counts.items() if 2 <= n <= cap]
        if not choices:
            break
        # Most runs first; a tie goes to a shape already held, then to the first tag.
        _, tag = max(choices, key=lambda nt: (nt[0], ShapeSpec("tag", nt[1]) in held, _neg(nt[1])))
        spec = ShapeSpec("tag", tag)
        shapes.append(spec)
        for run_id in [r for r, c in remaining.items() if tag in c.tags]:
            expected[run_id] = spec
            del remaining[run_id]
    order = sorted(
        remaining.values(),
        key=lambda c: (c.rank, ShapeSpec("run", c.run_id) not in held, c.run_id),
    )
    for candidate in order[: max(0, slots - len(shapes))]:
        spec = ShapeSpec("run", candidate.run_id)
        shapes.append(spec)
        expected[candidate.run_id] = spec
        del remaining[candidate.run_id]
    return ShapePlan(tuple(shapes), expected, tuple(sorted(remaining)))


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts ``text`` in reverse, so ``max`` picks the first tag on a tie."""
    return tuple(-ord(ch) for ch in text)

"""When the cyclic garbage collector runs, in a process whose heap is mostly watches.

Measured at 50,000 Parallel watches (``bench/ceiling.py``, a ``gc.callbacks`` hook
timing every pass): with CPython's default thresholds (700, 10, 10), full passes
ran one after another while the watches were built, growing to 630 ms each; after
READY, passes of 30-700 ms kept stalling the event loop, and the collector took
about a quarter of the CPU of a poll (617 us a poll against 463 us with the
thresholds below, same run). The watches' objects are long-lived and acyclic (frozen
dataclasses, replaced whole on every poll and freed by reference counting), so
passes over them find nothing to collect.

So: no cyclic collection while the config is read and the watches are built (a
bounded phase; the first pass is not included, since polls that fail make garbage
with cycles), and what was built frozen at once (otherwise the first
young pass after it traversed every object of the build, 270 ms at 50,000 watches);
a young generation of 50,000 objects instead of 700 from then on; and at READY
(``settle``) one full pass before ``gc.freeze()`` moves what exists then out of the
collector's sight.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STEADY_THRESHOLDS", "building", "settle", "steady", "unsettle"]

STEADY_THRESHOLDS = (50_000, 20, 100)
"""``gc.set_threshold`` while watching (young, middle, old)."""


@contextmanager
def building() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting still frees); what the
    block built is frozen when it succeeds."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()


@contextmanager
def steady() -> Iterator[None]:
    """:data:`STEADY_THRESHOLDS` inside the block; the previous ones after it (tests run
    many daemons in one process)."""
    previous = gc.get_threshold()
    gc.set_threshold(*STEADY_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def settle() -> None:
    """At READY: collect once, then keep what exists now (config, clients, one runtime
    per watch) out of every later pass."""
    gc.collect()
    gc.freeze()


def unsettle() -> None:
    """On the way out: hand the frozen objects back to the collector."""
    gc.unfreeze()

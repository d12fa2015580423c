"""Grouping: Alertmanager's timing, and nothing lost or doubled under any interleaving."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.grouping import Grouper


def test_group_wait_collects_a_burst_into_one_batch() -> None:
    g: Grouper[str, str] = Grouper()
    for i in range(100):
        assert g.add("k", f"e{i}", "ctx", wait=1.0, interval=10.0, now=0.0 + i / 1000)
    assert g.pop_due(0.99) is None
    batch = g.pop_due(1.0)
    assert batch is not None
    assert len(batch.items) == 100
    assert batch.context == "ctx"
    assert len(g) == 0


def test_after_a_flush_new_events_wait_for_the_interval() -> None:
    g: Grouper[str, None] = Grouper()
    g.add("k", "a", None, wait=1.0, interval=10.0, now=0.0)
    assert g.pop_due(1.0) is not None
    g.add("k", "b", None, wait=1.0, interval=10.0, now=3.0)
    g.add("k", "c", None, wait=1.0, interval=10.0, now=5.0)
    assert g.next_due() == 11.0
    assert g.pop_due(10.9) is None
    batch = g.pop_due(11.0)
    assert batch is not None
    assert batch.items == ("b", "c")


def test_a_quiet_group_starts_afresh_with_group_wait() -> None:
    g: Grouper[str, None] = Grouper()
    g.add("k", "a", None, wait=1.0, interval=10.0, now=0.0)
    g.pop_due(1.0)
    g.add("k", "b", None, wait=1.0, interval=10.0, now=30.0)
    assert g.next_due() == 31.0


def test_groups_are_independent_and_ordered_by_due_time() -> None:
    g: Grouper[str, None] = Grouper()
    g.add("late", "x", None, wait=5.0, interval=10.0, now=0.0)
    g.add("early", "y", None, wait=1.0, interval=10.0, now=0.0)
    first = g.pop_due(10.0)
    second = g.pop_due(10.0)
    assert first is not None
    assert second is not None
    assert (first.key, second.key) == ("early", "late")


def test_bound_refuses_instead_of_growing() -> None:
    g: Grouper[int, None] = Grouper(max_items=3)
    assert [g.add("k", i, None, wait=0, interval=0, now=0) for i in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_sweep_forgets_quiet_groups() -> None:
    g: Grouper[int, None] = Grouper()
    for key in range(50):
        g.add(key, key, None, wait=0, interval=5, now=0)
    g.drain()
    assert g.groups == 50
    g.sweep(4.0)
    assert g.groups == 50
    g.sweep(100.0)
    assert g.groups == 0


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 4), st.floats(0, 3)),
        st.tuples(st.just("tick"), st.floats(0, 20)),
        st.tuples(
            st.just("pop"),
        ),
    ),
    max_size=200,
)


@settings(max_examples=300)
@given(operations, st.floats(0, 5), st.floats(0, 30))
def test_every_event_is_delivered_exactly_once(
    ops: list[tuple[object, ...]], wait: float, interval: float
) -> None:
    """For any interleaving of events, time and flushes, each event is in exactly one batch."""
    g: Grouper[int, None] = Grouper()
    now = 0.0
    added: list[int] = []
    delivered: list[int] = []
    for op in ops:
        match op:
            case ("add", key, dt):
                now += float(dt)  # type: ignore[arg-type]
                item = len(added)
                assert g.add(key, item, None, wait=wait, interval=interval, now=now)
                added.append(item)
            case ("tick", dt):
                now += float(dt)  # type: ignore[arg-type]
            case ("pop",):
                while (batch := g.pop_due(now)) is not None:
                    assert batch.items
                    delivered.extend(batch.items)
                    for item in batch.items:
                        assert item in added
    for batch in g.drain():
        delivered.extend(batch.items)
    assert sorted(delivered) == added
    assert len(g) == 0


def test_an_escalation_skips_the_interval_but_repeats_do_not() -> None:
    g: Grouper[str, None] = Grouper()
    g.add("run", "reattempting", None, wait=1.0, interval=10.0, now=0.0, rank=2)
    assert g.pop_due(1.0) is not None
    g.add("run", "executing", None, wait=1.0, interval=10.0, now=2.0, rank=0)
    assert g.next_due() == 11.0  # less urgent: waits for the interval
    g.add("run", "crashed", None, wait=1.0, interval=10.0, now=3.0, rank=3)
    assert g.next_due() == 4.0  # more urgent than anything sent: after group_wait
    batch = g.pop_due(4.0)
    assert batch is not None
    assert batch.items == ("executing", "crashed")
    g.add("run", "failed again", None, wait=1.0, interval=10.0, now=5.0, rank=3)
    assert g.next_due() == 14.0  # same rank as already sent: batched

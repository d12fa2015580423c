"""Scripted scenarios: timed changes applied to a :class:`World`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from watcher.simulator.world import World

__all__ = ["Scenario", "Step", "demo_scenario", "play"]


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at`` seconds after the start, apply ``action``."""

    at: float
    description: str
    action: Callable[[World], object]


@dataclass(frozen=True)
class Scenario:
    """A set-up and a timeline."""

    name: str
    setup: Callable[[World], object]
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> float:
        """When the last step happens."""
        return max((s.at for s in self.steps), default=0.0)


async def play(
    world: World,
    scenario: Scenario,
    *,
    speed: float = 1.0,
    on_step: Callable[[Step], object] | None = None,
) -> None:
    """Apply the scenario's steps at their times (``speed`` > 1 compresses the timeline)."""
    start = anyio.current_time()
    for step in sorted(scenario.steps, key=lambda s: s.at):
        delay = start + step.at / speed - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        step.action(world)
        if on_step is not None:
            on_step(step)


DEMO_GROUP = "tgrp_nightly_enrichment"


def _demo_setup(world: World) -> None:
    world.add_group(DEMO_GROUP, 12)
    world.add_trigger_run("run_invoice_4711", "send-invoice", "QUEUED", tags=["billing"])
    world.add_trigger_run("run_report_0815", "daily-report", "QUEUED", tags=["reports"])
    world.add_parallel_run("trun_company_profile", "running")
    # An old failure: part of the trigger_runs baseline, never announced.
    world.add_trigger_run("run_old_failure", "sync-crm", "FAILED", tags=["prod"])


def demo_scenario() -> Scenario:
    """About 16 s of activity: a group with failures that finishes, a run that is
    retried then crashes, one that completes, a new failing run discovered by
    listing."""
    g = DEMO_GROUP
    return Scenario(
        "demo",
        _demo_setup,
        (
            Step(2, "6 group runs start", lambda w: w.progress_group(g, 6, "running")),
            Step(
                2.5,
                "send-invoice starts",
                lambda w: w.set_trigger_run("run_invoice_4711", "EXECUTING"),
            ),
            Step(
                3,
                "daily-report starts",
                lambda w: w.set_trigger_run("run_report_0815", "EXECUTING"),
            ),
            Step(4, "4 group runs complete", lambda w: w.progress_group(g, 4, "completed")),
            Step(
                5,
                "send-invoice attempt 1 fails; it will be retried (the API still reads EXECUTING)",
                lambda w: w.set_trigger_run(
                    "run_invoice_4711", "RETRYING_AFTER_FAILURE", "Stripe API timed out after 30s"
                ),
            ),
            Step(
                6.5,
                "2 group runs fail",
                lambda w: w.progress_group(
                    g, 2, "failed", "Source site answered 503 Service Unavailable"
                ),
            ),
            Step(
                7,
                "send-invoice attempt 2 starts (attemptCount 1 -> 2)",
                lambda w: w.set_trigger_run("run_invoice_4711", "EXECUTING"),
            ),
            Step(
                8,
                "daily-report completes",
                lambda w: w.set_trigger_run("run_report_0815", "COMPLETED"),
            ),
            Step(
                9,
                "a new sync-crm run starts",
                lambda w: w.add_trigger_run(
                    "run_sync_crm_9001", "sync-crm", "EXECUTING", tags=["prod"]
                ),
            ),
            Step(
                10,
                "send-invoice crashes",
                lambda w: w.set_trigger_run(
                    "run_invoice_4711", "CRASHED", "Worker ran out of memory (OOM killed)"
                ),
            ),
            Step(
                11,
                "company-profile task run completes",
                lambda w: w.set_parallel_run("trun_company_profile", "completed"),
            ),
            Step(
                12,
                "the rest of the group completes",
                lambda w: w.progress_group(g, 12, "completed"),
            ),
            Step(
                13,
                "the new sync-crm run fails",
                lambda w: w.set_trigger_run("run_sync_crm_9001", "FAILED", "HubSpot token expired"),
            ),
        ),
    )

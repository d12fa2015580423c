"""Run every benchmark against the simulator on loopback; write docs/BENCHMARKS.md.

``make bench`` (or ``.venv/bin/python -m bench``). Options: ``--only NAME`` (repeatable),
``--runs N`` (default 3), ``--out PATH``. The raw results go beside the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import anyio

from bench import budget, ceiling, efficiency, latency, scale, startup, storm, stream
from bench.common import ROOT
from bench.report import write_report

BENCHMARKS = (
    "latency",
    "efficiency",
    "scale",
    "ceiling",
    "budget",
    "storm",
    "startup",
    "stream",
)


async def run(names: list[str], runs: int) -> dict[str, Any]:
    """Run the named benchmarks in order; each result carries its wall time."""
    results: dict[str, Any] = {}
    for name in names:
        started = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        match name:
            case "latency":
                result = await latency.bench(runs, duration=12)
            case "efficiency":
                result = await efficiency.bench(runs, day=30)
            case "scale":
                result = await scale.bench(runs, total=10_000, window=6)
            case "ceiling":
                # Needs nginx (apt-get install nginx-light); pins to CPUs 0 and 1.
                result = await ceiling.bench(runs, sizes=(1_000, 10_000, 50_000), window=6)
            case "budget":
                # One long run: the first pass alone is 2,000 polls at the budget's pace.
                result = await budget.bench(1, steady=40)
            case "storm":
                result = await storm.bench(runs)
            case "startup":
                result = await startup.bench(runs)
            case "stream":
                result = await stream.bench(runs, duration=12)
            case _:
                raise SystemExit(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")
        result["wall_s"] = time.monotonic() - started
        print(f"bench: {name} done in {result['wall_s']:.0f}s", flush=True)
        results[name] = result
    return results


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHMARKS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    started = time.monotonic()
    results = anyio.run(run, names, args.runs)
    raw = args.out.with_suffix(".json")
    previous = json.loads(raw.read_text()) if raw.exists() and args.only else {}
    merged = {**previous.get("results", {}), **results}
    meta = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "runs": args.runs,
        "total_s": time.monotonic() - started,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.only and "meta" in previous:
        # The suite's time is the last full run's; say which benchmarks ran since.
        meta["total_s"] = previous["meta"]["total_s"]
        meta["rerun"] = sorted({*previous["meta"].get("rerun", []), *names})
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"meta": meta, "results": merged}, indent=1, default=str))
    write_report(args.out, meta, merged)
    print(f"bench: wrote {args.out} in {time.monotonic() - started:.0f}s")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()

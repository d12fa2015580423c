"""Profile the daemon's hot path: the scale benchmark's load, in-process, under pyinstrument.

``.venv/bin/python -m bench.profile [--watches 1000] [--seconds 10]`` prints the
call tree of the measured window (after every watch was polled once).
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
from pyinstrument import Profiler

from bench.common import PARALLEL_KEY, TRIGGER_KEY, receivers, simulator
from bench.scale import _config, _spec
from watcher.config.model import WatcherConfig
from watcher.config.settings import Settings
from watcher.daemon.app import Daemon


async def profile(watches: int, seconds: float) -> str:
    """The text profile of ``seconds`` of flat-out polling over ``watches`` watches."""
    async with simulator(_spec(watches)) as sim, receivers(1) as (hook,):
        data: dict[str, Any] = _config(sim.url, hook, watches, "1s")
        daemon = Daemon(
            WatcherConfig.model_validate(data),
            Settings(parallel_api_key=PARALLEL_KEY, trigger_secret_key=TRIGGER_KEY),
        )
        profiler = Profiler(interval=0.001)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: daemon.run(handle_signals=False))
            with anyio.fail_after(300):
                await daemon.ready.wait()
            profiler.start()
            await anyio.sleep(seconds)
            profiler.stop()
            daemon.request_stop()
    return profiler.output_text(unicode=True, color=False)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(anyio.run(profile, args.watches, args.seconds))


if __name__ == "__main__":
    main()

"""``run-watcher``: the command line. Heavy imports happen inside the commands.

Exit codes: 0 success; 1 a watch or notifier failed (``once``, ``test-notify``);
2 the configuration or environment is unusable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watcher import __version__

if TYPE_CHECKING:
    from watcher.config.model import WatcherConfig
    from watcher.config.settings import Settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default,
        help="YAML config file (default: $WATCHER_CONFIG)",
    )
    parser.add_argument(
        "--log-level",
        default="info" if top else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    parser.add_argument(
        "--log-format",
        default="auto" if top else argparse.SUPPRESS,
        choices=["auto", "json", "console"],
        help="log format: json lines, readable lines, or auto (json unless stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="run-watcher",
        description="Watch Parallel task groups/runs and Trigger.dev runs; notify on transitions through apprise.",
    )
    parser.add_argument("--version", action="version", version=f"run-watcher {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    command("run", "run the daemon in the foreground until SIGTERM/SIGINT")
    command("once", "poll every watch once and print where each stands (exit 1 if any errored)")
    command("check-config", "validate the config file and environment (exit 2 if unusable)")
    notify = command("test-notify", "send a test message to each notifier and print each result")
    notify.add_argument(
        "--tag", action="append", default=[], help="only notifiers with this tag (repeatable)"
    )
    demo = command(
        "demo",
        "watch the built-in simulator and print notifications as they happen (no keys needed)",
    )
    demo.add_argument(
        "--speed", type=float, default=1.0, help="compress the scenario's timeline (default 1.0)"
    )
    demo.add_argument("--verbose", action="store_true", help="show the daemon's log as well")
    routes = command("routes", "show the route tree, or test where an event would go")
    routes_sub = routes.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    _common(routes_sub.add_parser("show", help="print the route tree and silences"), top=False)
    test = routes_sub.add_parser("test", help="print the routes and notifiers an event reaches")
    _common(test, top=False)
    test.add_argument(
        "--event",
        help="the event as JSON or YAML, e.g. '{kind: run.status_changed, severity: failure}'",
    )
    test.add_argument("--event-file", type=Path, help="a JSON or YAML file holding the event")
    sim = command("simulate", "serve the API simulator on loopback (for trying configs by hand)")
    sim.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sim.add_argument(
        "--scenario",
        choices=["demo", "none"],
        default="demo",
        help="scenario to play (default demo)",
    )
    return parser


def _error(message: str) -> int:
    print(f"run-watcher: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _load(args: argparse.Namespace) -> tuple[WatcherConfig, Settings, Path]:
    """Config, environment and the file's path; raises ConfigError with a message for the user."""
    from pydantic import ValidationError

    from watcher.config.loader import ConfigError, load_config
    from watcher.config.settings import SecretFileError, Settings

    try:
        settings = Settings()
    except SecretFileError as exc:
        raise ConfigError([str(exc)]) from None
    except ValidationError as exc:
        problems = [
            f"environment {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(problems) from None
    path = args.config or settings.watcher_config
    if path is None:
        raise ConfigError(["no config file: give --config PATH or set WATCHER_CONFIG"])
    return settings.apply_to(load_config(Path(path))), settings, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``run-watcher`` console script."""
    args = build_parser().parse_args(argv)
    from watcher.config.loader import ConfigError
    from watcher.daemon.logging import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        match args.command:
            case "demo":
                from watcher.cli.demo import run_demo

                return run_demo(speed=args.speed, verbose=args.verbose)
            case "simulate":
                from watcher.cli.demo import run_simulator

                return run_simulator(port=args.port, scenario=args.scenario)
        config, settings, path = _load(args)
        from watcher.cli import commands

        match args.command:
            case "routes":
                from watcher.cli import routes

                if args.routes_command == "show":
                    return routes.show(config)
                return routes.test(config, args.event, args.event_file)
            case "check-config":
                return commands.check_config(config, settings, args)
            case "once":
                return commands.once(config, settings)
            case "test-notify":
                return commands.test_notify(config, args.tag)
            case "run":
                return commands.run(config, settings, path)
    except ConfigError as exc:
        return _error(str(exc).replace("\n", "\n  "))
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

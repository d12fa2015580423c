"""``run-watcher``: the command line. Heavy imports happen inside the commands.

Exit codes: 0 success; 1 a watch or notifier failed (``once``, ``test-notify``);
2 the configuration or environment is unusable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watcher import __version__
from watcher.cli.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from watcher.config.model import WatcherConfig
    from watcher.config.settings import Settings

__all__ = ["main"]


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


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    """An action of a command that talks to the running daemon."""
    parser = actions.add_parser(name, help=help_text, description=help_text)
    _common(parser, top=False)
    _url(parser)
    return parser


def _url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the daemon's base URL (default: $WATCHER_URL, else http.listen of the config, "
        "else http://127.0.0.1:9464)",
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

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        p = command(name, help_text)
        _url(p)
        return p

    remote("status", "show the running daemon's watches (exit 1 if any cannot see upstream)")
    cluster = remote("cluster", "show the cluster: its members, what each owns, when it renewed")
    cluster.add_argument("--json", action="store_true", help="print the JSON the daemon returns")
    watch = command("watch", "list, add or remove watches of the running daemon (its HTTP API)")
    watch_sub = watch.add_subparsers(dest="watch_command", metavar="ACTION", required=True)
    ls = _action(watch_sub, "ls", "list the watches")
    ls.add_argument("--json", action="store_true", help="print the JSON the daemon returns")
    add = _action(watch_sub, "add", "watch a run or group now, as a config entry would")
    add.add_argument(
        "type",
        choices=["parallel_task_group", "parallel_task_run", "trigger_run", "trigger_runs"],
    )
    add.add_argument("id", nargs="?", help="the group or run id (trigger_runs: optional)")
    add.add_argument("--name", help="shown in messages")
    add.add_argument(
        "--label", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    add.add_argument(
        "--expire-after", metavar="DURATION", help="stop watching after this long, e.g. 6h"
    )
    add.add_argument(
        "--json", dest="extra", metavar="OBJECT", help="more keys of the entry, as JSON"
    )
    rm = _action(watch_sub, "rm", "stop a watch added through the API")
    rm.add_argument("type")
    rm.add_argument("id")
    silence = command("silence", "list, add or lift silences of the running daemon")
    silence_sub = silence.add_subparsers(dest="silence_command", metavar="ACTION", required=True)
    _action(silence_sub, "ls", "list the silences (file and API)")
    s_add = _action(silence_sub, "add", "hold back matching events for a while")
    s_add.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="FIELD=VALUE[,VALUE]",
        help="as in routes (kind, severity, source, watch.name, labels.x, ...); repeatable",
    )
    ends = s_add.add_mutually_exclusive_group()
    ends.add_argument("--for", dest="duration", metavar="DURATION", help="default 1h")
    ends.add_argument("--until", metavar="TIME", help="ISO 8601 with a time zone")
    s_add.add_argument("--comment", help="why (shown in the log and in silence ls)")
    s_rm = _action(silence_sub, "rm", "lift a silence added through the API")
    s_rm.add_argument("id")
    inc = remote("incidents", "list the running daemon's incidents (open first)")
    inc.add_argument("--open", dest="open_only", action="store_true", help="open ones only")
    inc.add_argument("--json", action="store_true", help="print the JSON the daemon returns")
    ack = remote("ack", "acknowledge an incident: its reminders and escalation stop")
    ack.add_argument("incident", help="its id, or a unique prefix of it")
    ack.add_argument("--by", help="who has it (default $USER)")
    ack.add_argument("--note", help="what you are doing about it")
    ack.add_argument("--undo", action="store_true", help="take the acknowledgement back")
    remote("reload", "make the running daemon re-read its config file (as SIGHUP)")
    health = remote("health", "exit 0 if the running daemon answers /healthz (for HEALTHCHECK)")
    health.add_argument("--ready", action="store_true", help="ask /readyz instead")
    config = command("config", "config file tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_sub.add_parser("schema", help="print the config file's JSON Schema (for editors)")
    completion = command("completion", "print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    sim = command("simulate", "serve the API simulator on loopback (for trying configs by hand)")
    sim.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sim.add_argument(
        "--scenario",
        choices=["demo", "none"],
        default="demo",
        help="scenario to play (default demo)",
    )
    sim.add_argument(
        "--receiver-port",
        type=int,
        default=9000,
        help="a webhook receiver that prints each message it gets (default 9000; 0: none)",
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
    from watcher.daemon.logging import SCRUBBER

    try:
        settings = Settings()
        SCRUBBER.add(settings.secret_values())
    except SecretFileError as exc:
        raise ConfigError([str(exc)]) from None
    except ValidationError as exc:
        problems = [
            f"environment {'.'.join(map(str, e['loc'])).upper()}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ConfigError(problems) from None
    path = args.config or settings.watcher_config
    if path is None:
        raise ConfigError(["no config file: give --config PATH or set WATCHER_CONFIG"])
    from watcher.daemon import gc_policy

    with gc_policy.building():  # thousands of watches: parsed objects, no cycles to find
        config = load_config(Path(path))
    return settings.apply_to(config), settings, Path(path)


def _remote(args: argparse.Namespace) -> int:
    from watcher.cli import remote

    def listen() -> str | None:
        if args.config is None and not os.environ.get("WATCHER_CONFIG"):
            from watcher.config.operations import DEFAULT_LISTEN

            return DEFAULT_LISTEN  # where a daemon listens unless told otherwise
        config, _, _ = _load(args)
        return config.http.listen

    try:
        url = remote.base_url(args.url, listen)
        match args.command:
            case "status":
                return remote.status(url)
            case "cluster":
                return remote.cluster(url, args.json)
            case "reload":
                return remote.reload(url)
            case "incidents":
                return remote.incidents(url, args.open_only, args.json)
            case "ack":
                return remote.ack(url, args.incident, args.by, args.note, args.undo)
            case "health":
                return remote.health(url, args.ready)
            case "silence":
                if args.silence_command == "ls":
                    return remote.silence_ls(url)
                if args.silence_command == "add":
                    return remote.silence_add(
                        url, args.match, args.duration, args.until, args.comment
                    )
                return remote.silence_rm(url, args.id)
        match args.watch_command:
            case "ls":
                return remote.watch_ls(url, args.json)
            case "add":
                return remote.watch_add(
                    url,
                    args.type,
                    args.id,
                    name=args.name,
                    labels=args.label,
                    expire_after=args.expire_after,
                    extra=args.extra,
                )
        return remote.watch_rm(url, args.type, args.id)
    except remote.RemoteError as exc:
        print(f"run-watcher: {exc}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``run-watcher`` console script."""
    args = build_parser().parse_args(argv)
    from watcher.daemon.logging import SCRUBBER, ScrubbedStream

    # Everything the CLI prints passes the scrubber: tables, errors, test-notify results.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = ScrubbedStream(stdout, SCRUBBER)
    sys.stderr = ScrubbedStream(stderr, SCRUBBER)
    try:
        return _main(args)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main(args: argparse.Namespace) -> int:
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

                return run_simulator(
                    port=args.port, scenario=args.scenario, receiver_port=args.receiver_port
                )
            case "config":
                import json

                from watcher.config.model import WatcherConfig

                print(json.dumps(WatcherConfig.model_json_schema(), indent=2))
                return EXIT_OK
            case "completion":
                try:
                    import shtab
                except ImportError:
                    return _error("completion needs shtab: pip install 'run-watcher[completion]'")

                print(shtab.complete(build_parser(), shell=args.shell))
                return EXIT_OK
            case (
                "status"
                | "cluster"
                | "watch"
                | "reload"
                | "health"
                | "silence"
                | "incidents"
                | "ack"
            ):
                return _remote(args)
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

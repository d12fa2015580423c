"""Load the YAML file and explain what is wrong with it: file, line, key path, reason."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from watcher.config.model import WatcherConfig

__all__ = ["ConfigError", "explain_errors", "format_loc", "load_config", "parse_config"]

_MAX_FILE = 4 * 1024 * 1024


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is the message for the user."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    @classmethod
    def only_in(cls, group: BaseExceptionGroup[BaseException]) -> ConfigError | None:
        """The problems of a task group that failed only with config errors (a port in
        use, say), as one error; None when anything else failed too."""
        errors, rest = group.split(cls)
        if errors is None or rest is not None:
            return None
        problems: list[str] = []
        pending: list[BaseException] = [errors]
        while pending:
            exc = pending.pop(0)
            if isinstance(exc, BaseExceptionGroup):
                pending[:0] = exc.exceptions
            elif isinstance(exc, cls):
                problems += exc.problems
        return cls(problems)


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    # libyaml's parser: faster, and its leftovers do not keep a 10,000-watch config's
    # heap resident (the pure-Python one left 7 MB behind in the daemon).
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """A safe loader that refuses duplicate keys (the later one would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                # A mapping or list as a key ({{}: 1}): PyYAML's own check, made first.
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found an unhashable key",
                    key_node.start_mark,
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _node_at(
    root: yaml.Node | None, loc: Sequence[int | str]
) -> tuple[yaml.Node | None, list[int | str]]:
    """Follow ``loc`` through the YAML node tree; return the deepest node and the path.

    pydantic puts the tag of a discriminated union in ``loc`` (``watches.0.trigger_run.id``);
    such parts name no YAML key and are skipped.
    """
    node = root
    path: list[int | str] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    path.append(part)
                    node = value_node
                    break
            else:
                if isinstance(part, str) and path and _is_tag(part):
                    continue
                path.append(part)
                # An unknown key: point at the mapping that holds it.
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            path.append(part)
            if 0 <= part < len(node.value):
                node = node.value[part]
            else:
                break
        else:
            if isinstance(part, str) and _is_tag(part):
                continue
            path.append(part)
    return node, path


_TAG = re.compile(
    r"(parallel_task_group|parallel_task_run|trigger_run|trigger_runs"
    r"|str|int|float|bool|none|[\w-]+\[.*\])"
)


def _is_tag(part: str) -> bool:
    """A ``loc`` part naming a union member rather than a key."""
    return bool(_TAG.fullmatch(part))


def format_loc(path: Sequence[int | str]) -> str:
    """``["watches", 1, "id"]`` -> ``watches[1].id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _explain(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the config reference in README.md)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown value {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def explain_errors(exc: ValidationError, prefix: Sequence[int | str] = ()) -> list[str]:
    """``key.path: reason`` for each error of a model validated from JSON (no YAML lines)."""
    problems = []
    for err in exc.errors():
        loc = [*prefix, *(p for p in err["loc"] if not (isinstance(p, str) and _is_tag(p)))]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
        key = format_loc(loc)
        problems.append(f"{key + ': ' if key else ''}{_explain(dict(err))}")
    return problems


_MAX_DEPTH = 64
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_depth(text: str, source: str) -> None:
    """Refuse a document nested deeper than any config needs, before it is built.

    The parser is iterative, the builders are recursive: libyaml's would overflow
    the C stack (a crash, not an exception) on a hostile ``[[[[...``.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_UniqueKeyLoader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > _MAX_DEPTH:
                raise ConfigError([f"{source}: invalid YAML: nested too deeply"])
        elif isinstance(event, _CLOSE):
            depth -= 1


def parse_config(text: str, source: str = "<config>") -> WatcherConfig:
    """Parse YAML text into a validated config, or raise :class:`ConfigError`."""
    try:
        _check_depth(text, source)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    except RecursionError:
        # PyYAML parses recursively; a hostile or broken file must not crash the caller.
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (polling:, watches:, ...)"])
    try:
        return WatcherConfig.model_validate(data)
    except ValidationError as exc:
        # The node tree (for line numbers) only when it is needed: for 10,000 watches it
        # is millions of small objects, and the heap they leave behind stays resident.
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc.append(str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
            node, path = _node_at(root, loc)
            line = f":{node.start_mark.line + 1}" if node is not None else ""
            key = format_loc(path)
            problems.append(f"{source}{line}: {key + ': ' if key else ''}{_explain(dict(err))}")
        raise ConfigError(problems) from None


def load_config(path: Path) -> WatcherConfig:
    """Read and validate the config file at ``path``."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    if len(raw) > _MAX_FILE:
        raise ConfigError([f"{path}: config file larger than {_MAX_FILE} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return parse_config(text, str(path))

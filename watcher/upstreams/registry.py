"""Every upstream the daemon can watch: one line per plugin."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from watcher.core.statuses import Source
from watcher.upstreams.parallel import PARALLEL
from watcher.upstreams.plugin import SourcePlugin
from watcher.upstreams.trigger import TRIGGER

__all__ = ["PLUGINS", "plugin_for"]

_ALL: tuple[SourcePlugin, ...] = (
    PARALLEL,
    TRIGGER,
)

PLUGINS: Mapping[Source, SourcePlugin] = MappingProxyType({p.source: p for p in _ALL})
"""The plugins by source, in registry order."""


def plugin_for(source: Source) -> SourcePlugin:
    """The plugin of ``source``; the watcher's own events have none."""
    try:
        return PLUGINS[source]
    except KeyError:
        raise LookupError(f"{source.value!r} is not an upstream with a plugin") from None

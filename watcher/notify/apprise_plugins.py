"""Load only the apprise plugins the configured notifiers use.

apprise 2.x imports every one of its 180-odd service plugins the first time a URL is
added (about 16 MB of a daemon that otherwise holds under 60 MB). Its plugin manager
takes the directory to load from (``load_modules(path=...)``), and counts itself
loaded once any directory was: so the daemon hands it a directory of links to the
plugins its URLs name, found by reading (not importing) the plugins' ``protocol`` and
``secure_protocol`` declarations. A scheme it cannot place loads every plugin, as
apprise itself would; ``tests/unit/test_apprise_plugins.py`` checks the placement
against a full load of the installed apprise.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["load_plugins", "plugin_index"]

_MODULE = re.compile(r"^(?!base|_)[a-z0-9_]+(\.py)?$", re.IGNORECASE)
"""The plugin entries apprise's manager considers (its own rule)."""
_DECLARATION = re.compile(r"^\s*(?:secure_)?protocol\s*=\s*(\([^)]*\)|[^\n]*)", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([A-Za-z0-9_+.-]+)[\"']")
_lock = threading.Lock()


@cache
def plugin_index(plugins: Path) -> dict[str, str]:
    """Each scheme the plugins in ``plugins`` declare, to the plugin entry (a module file
    or package directory name) that declares it."""
    index: dict[str, str] = {}
    for entry in sorted(plugins.iterdir()):
        if not _MODULE.match(entry.name):
            continue
        sources = sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]
        for source in sources:
            text = source.read_text(encoding="utf-8", errors="replace")
            for declaration in _DECLARATION.finditer(text):
                for scheme in _QUOTED.findall(declaration.group(1)):
                    index.setdefault(scheme.lower(), entry.name)
    return index


def _manager() -> Any:
    from apprise.manager_plugins import NotificationManager

    manager: Any = NotificationManager  # untyped; a singleton: apprise's own N_MGR
    return manager()


def load_plugins(schemes: Iterable[str]) -> None:
    """Have apprise load the plugins of ``schemes`` (and only those, unless one of them
    is not found, when it loads them all)."""
    wanted = {s.lower() for s in schemes}
    with _lock:
        manager = _manager()
        if manager and all(s in manager for s in wanted):
            return
        plugins = Path(manager.module_path)
        index = plugin_index(plugins)
        if not wanted or not all(s in index for s in wanted):
            manager.load_modules()
            return
        chosen = Path(tempfile.mkdtemp(prefix="run-watcher-apprise-"))
        try:
            for name in {index[s] for s in wanted}:
                (chosen / name).symlink_to(plugins / name)
            manager.load_modules(path=str(chosen))
        finally:
            shutil.rmtree(chosen, ignore_errors=True)

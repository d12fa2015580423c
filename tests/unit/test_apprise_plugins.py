"""Only the apprise plugins a config names are loaded, and the daemon places every
scheme of the installed apprise where apprise itself does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from watcher.notify.apprise_plugins import _manager, load_plugins, plugin_index


def test_every_scheme_is_found_where_apprise_loads_it() -> None:
    manager = _manager()
    manager.load_modules()  # everything, as apprise would on its own
    index = plugin_index(Path(manager.module_path))
    placed = {str(schema): manager[schema].__module__.split(".")[2] for schema in manager.schemas()}
    assert len(placed) > 100
    found = {s: Path(index[s]).stem for s in placed if s in index}
    assert {s: placed[s] for s in found} == found  # never a wrong plugin
    # Schemes declared indirectly (kodi's, dbus's) are not found: they load everything.
    assert len(found) >= 0.95 * len(placed)


def test_a_config_of_webhooks_loads_the_webhook_plugin_alone() -> None:
    script = """
import json, sys
import apprise
from watcher.notify.apprise_plugins import load_plugins
load_plugins(["json"])
ok = apprise.Apprise().add("json://localhost/hook")
loaded = sorted(m for m in sys.modules if m.startswith("apprise.plugins."))
print(json.dumps({"ok": ok, "loaded": loaded}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout)
    assert result["ok"] is True
    assert "apprise.plugins.custom_json" in result["loaded"]
    assert "apprise.plugins.slack" not in result["loaded"]
    assert len(result["loaded"]) < 10


def test_an_unknown_scheme_loads_them_all_as_apprise_would() -> None:
    load_plugins(["no-such-scheme"])
    assert "slack" in _manager()

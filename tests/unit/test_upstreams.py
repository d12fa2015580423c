"""The upstream registry: every source a watch can name has one plugin, and it is consistent."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from pydantic import SecretStr

from watcher.clock import SystemClock
from watcher.config.model import SourcesConfig, WatcherConfig
from watcher.config.settings import Settings
from watcher.core.events import WatchType
from watcher.core.statuses import Source
from watcher.daemon.build import build_gates, open_clients
from watcher.upstreams.registry import PLUGINS, plugin_for


def test_every_watch_type_of_an_upstream_has_a_plugin() -> None:
    upstreams = {t.source for t in WatchType if t is not WatchType.WATCHER}
    assert upstreams == set(PLUGINS)
    with pytest.raises(LookupError, match="'watcher' is not an upstream"):
        plugin_for(Source.WATCHER)


@pytest.mark.parametrize("source", list(PLUGINS))
def test_a_plugin_reads_its_own_section_and_key(source: Source) -> None:
    plugin = PLUGINS[source]
    assert plugin.source is source
    sources = SourcesConfig()
    assert plugin.options(sources) is getattr(sources, source.value)
    assert plugin.credential.variable.startswith(source.value.upper() + "_")
    settings = Settings.model_validate({})
    assert plugin.credential.read(settings) is None
    keyed = Settings.model_validate({plugin.credential.variable.lower(): "k"}, by_name=True)
    read = plugin.credential.read(keyed)
    assert isinstance(read, SecretStr)
    assert read.get_secret_value() == "k"


def test_links_follow_the_watch_type() -> None:
    sources = SourcesConfig.model_validate(
        {
            "parallel": {"group_url": "https://p/g/{id}", "run_url": "https://p/r/{id}"},
            "trigger": {"run_url": "https://t/{id}"},
        }
    )
    group = plugin_for(Source.PARALLEL).links(sources, WatchType.PARALLEL_TASK_GROUP)
    run = plugin_for(Source.PARALLEL).links(sources, WatchType.PARALLEL_TASK_RUN)
    assert (group.url, group.run_url) == ("https://p/g/{id}", "https://p/r/{id}")
    assert (run.url, run.run_url) == ("https://p/r/{id}", "https://p/r/{id}")
    trig = plugin_for(Source.TRIGGER).links(sources, WatchType.TRIGGER_RUNS)
    assert (trig.url, trig.run_url) == ("https://t/{id}", "https://t/{id}")


@pytest.mark.anyio
async def test_a_client_is_opened_for_every_upstream_with_a_key_only() -> None:
    config = WatcherConfig()
    settings = Settings.model_validate({"trigger_secret_key": "tr_prod_x"}, by_name=True)
    gates = build_gates(config.sources, SystemClock())
    async with AsyncExitStack() as stack:
        clients = await open_clients(stack, config, settings, gates)
        assert set(clients) == {Source.TRIGGER}
        api, feed = clients[Source.TRIGGER].upstreams  # the realtime feed has its own pool
        for upstream in (api, feed):
            assert upstream.client.headers["authorization"] == "Bearer tr_prod_x"
        assert feed.client is not api.client

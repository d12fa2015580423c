from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config.loader import ConfigError, load_config, parse_config
from watcher.config.model import TriggerRunsWatch

ROOT = Path(__file__).parents[2]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "w.yaml")
    return info.value.problems


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "example.yaml")
    assert len(config.watches) == 5
    assert config.polling.min_interval == 2.0
    assert config.polling.max_interval == 300.0
    assert config.routes is not None
    assert config.routes[0].match == {"kind": "run.retrying"}  # retries go to a quiet channel
    assert config.routes[1].continue_ is True
    runs = config.watches[3]
    assert isinstance(runs, TriggerRunsWatch)
    assert runs.filter.status == ["FAILED", "CRASHED", "SYSTEM_FAILURE"]


def test_issue_contract_shape_is_accepted() -> None:
    config = parse_config(
        """
polling: {min_interval: 2s, max_interval: 5m, discovery_interval: 30s}
watches:
  - {type: parallel_task_group, id: tgrp_123, name: nightly-enrichment, labels: {team: data}}
  - {type: trigger_run, id: run_abc}
  - type: trigger_runs
    filter: {status: [FAILED, CRASHED, SYSTEM_FAILURE], task: [send-invoice], tag: [prod]}
notifiers:
  - {url: "slack://T000/B000/XXXX", tags: [oncall]}
  - {url: "json://127.0.0.1:9000/hook", tags: [audit], format: json}
routes:
  - {match: {severity: [failure, warning]}, notify: [oncall]}
  - {match: {}, notify: [audit]}
"""
    )
    assert [w.ref().key for w in config.watches][:2] == [
        "parallel_task_group:tgrp_123",
        "trigger_run:run_abc",
    ]
    assert config.watches[2].ref().id.startswith("runs-")


def test_unknown_key_names_file_line_and_path() -> None:
    (msg,) = problems("polling:\n  min_intervall: 2s\n")
    assert msg.startswith("w.yaml:2: polling.min_intervall: unknown key")


def test_unknown_key_inside_a_watch() -> None:
    (msg,) = problems("watches:\n  - type: trigger_run\n    id: run_a\n    nmae: x\n")
    assert msg.startswith("w.yaml:4: watches[0].nmae: unknown key")


def test_missing_id_and_bad_type() -> None:
    msgs = problems("watches:\n  - type: trigger_run\n  - type: trigger_rn\n    id: x\n")
    assert any(m.startswith("w.yaml:2: watches[0].id: required key is missing") for m in msgs)
    assert any("watches[1]" in m and "trigger_rn" in m for m in msgs)


def test_bad_duration_is_explained() -> None:
    (msg,) = problems("polling:\n  max_interval: 5 minutes\n")
    assert msg.startswith("w.yaml:2: polling.max_interval: invalid duration '5 minutes'")


def test_min_above_max_is_refused() -> None:
    (msg,) = problems("polling: {min_interval: 10m, max_interval: 1m}\n")
    assert "max_interval must be at least min_interval" in msg


@pytest.mark.parametrize("bad_id", ["../etc", "run%2Fx", "run?x=1", "run#a", "a b", "run/x", ""])
def test_ids_that_could_escape_the_path_are_refused(bad_id: str) -> None:
    (msg,) = problems(f'watches:\n  - {{type: trigger_run, id: "{bad_id}"}}\n')
    assert "watches[0].id" in msg
    assert "invalid id" in msg


def test_unknown_trigger_status_in_filter() -> None:
    (msg,) = problems("watches:\n  - type: trigger_runs\n    filter: {status: [FAILD]}\n")
    assert "watches[0].filter.status" in msg
    assert "FAILD" in msg


def test_duplicate_yaml_key() -> None:
    (msg,) = problems("polling:\n  min_interval: 1s\n  min_interval: 2s\n")
    assert msg.startswith("w.yaml:3: invalid YAML: duplicate key 'min_interval' (first at line 2)")


def test_a_mapping_as_a_key_is_a_config_error_not_a_crash() -> None:
    # Found by the fuzz test: {{}} made the duplicate-key check raise TypeError.
    (msg,) = problems("polling:\n  {a: 1}: 2\n")
    assert msg.startswith("w.yaml:2: invalid YAML: found an unhashable key")


def test_yaml_syntax_error_has_a_line() -> None:
    (msg,) = problems("watches:\n  - type: [unclosed\n")
    assert msg.startswith("w.yaml:3: invalid YAML")


def test_duplicate_watch_and_unknown_route_tag() -> None:
    msgs = problems("watches:\n  - {type: trigger_run, id: a}\n  - {type: trigger_run, id: a}\n")
    assert "watches[1] repeats watches[0]" in msgs[0]
    msgs = problems(
        "notifiers: [{url: 'json://x', tags: [a]}]\nroutes: [{match: {}, notify: [b]}]\n"
    )
    assert "routes[0]: no notifier has tag 'b'" in msgs[0]


def test_heartbeat_and_group_mode_are_checked() -> None:
    msgs = problems(
        "notifiers: [{url: 'json://x', tags: [a]}]\nheartbeat: {notify: [deadman], interval: 5m}\n"
    )
    assert "heartbeat.notify: no notifier has tag 'deadman'" in msgs[0]
    msgs = problems("watches:\n  - {type: parallel_task_group, id: g, mode: push}\n")
    assert "watches[0]" in msgs[0]
    assert "mode" in msgs[0]


def test_route_match_fields_and_values_are_checked() -> None:
    (msg,) = problems(
        "notifiers: [{url: 'json://x', tags: [a]}]\nroutes: [{match: {sevrity: failure}, notify: [a]}]\n"
    )
    assert "unknown match field 'sevrity'" in msg
    (msg,) = problems(
        "notifiers: [{url: 'json://x', tags: [a]}]\nroutes: [{match: {severity: fatal}, notify: [a]}]\n"
    )
    assert "unknown value 'fatal'" in msg


def test_notifier_needs_exactly_one_url_source_and_never_echoes_it() -> None:
    (msg,) = problems("notifiers: [{url: 'slack://T1/B2/SECRETTOKEN', url_env: X, tags: [a]}]\n")
    assert "exactly one of url, url_env, url_file" in msg
    assert "SECRETTOKEN" not in msg


def test_top_level_must_be_a_mapping_and_empty_is_fine() -> None:
    (msg,) = problems("- a\n- b\n")
    assert "top level must be a mapping" in msg
    assert parse_config("").watches == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_label_names() -> None:
    (msg,) = problems("watches:\n  - {type: trigger_run, id: a, labels: {'bad name': x}}\n")
    assert "label name 'bad name'" in msg


def test_trigger_api_version_takes_known_values_only() -> None:
    assert (
        parse_config("sources: {trigger: {api_version: legacy}}").sources.trigger.api_version
        == "legacy"
    )
    (problem,) = problems('sources: {trigger: {api_version: "2025-07-17"}}')
    assert "sources.trigger.api_version" in problem
    assert "silently serves the legacy one" in problem


def test_filter_statuses_must_exist_under_the_api_version() -> None:
    (problem,) = problems("watches: [{type: trigger_runs, filter: {status: [EXECUTING, FROZEN]}}]")
    assert "watches[0].filter.status: 'FROZEN' belongs to the legacy status set" in problem
    legacy = parse_config(
        "sources: {trigger: {api_version: legacy}}\n"
        "watches: [{type: trigger_runs, filter: {status: [REATTEMPTING, FROZEN]}}]"
    )
    assert isinstance(legacy.watches[0], TriggerRunsWatch)
    (problem,) = problems(
        "sources: {trigger: {api_version: legacy}}\n"
        "watches: [{type: trigger_runs, filter: {status: [WAITING]}}]"
    )
    assert "'WAITING' belongs to the current status set" in problem


def test_queue_filter_takes_the_sdks_form() -> None:
    config = parse_config(
        "watches: [{type: trigger_runs, filter: {queue: [{type: task, name: send-invoice}, "
        "{type: custom, name: shared}, plain]}}]"
    )
    watch = config.watches[0]
    assert isinstance(watch, TriggerRunsWatch)
    assert watch.filter.list_filter().params()["filter[queue]"] == "task/send-invoice,shared,plain"
    (problem,) = problems(
        "watches: [{type: trigger_runs, filter: {queue: [{type: job, name: x}]}}]"
    )
    assert "watches[0].filter.queue[0]" in problem
    assert "{type: task, name: <task id>}" in problem

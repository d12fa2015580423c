from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.config.loader import ConfigError, parse_config
from watcher.core.diff import diff_group
from watcher.core.events import Event, WatchRef, WatchType, freeze
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot
from watcher.notify.templates import (
    MessageRenderer,
    TemplateProblem,
    TemplateSpec,
    check_template,
    template_context,
)

NOW = datetime(2026, 11, 22, 10, tzinfo=UTC)
GROUP = WatchRef(
    WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly-enrichment", freeze({"team": "data"})
)


def failures(n: int) -> list[Event]:
    runs = tuple(FailedRun(f"trun_{i:02d}", f"error <{i}>", f"m{i}") for i in range(n))
    before = GroupSnapshot("tgrp_1", True, 30, freeze({"running": 30}))
    after = GroupSnapshot("tgrp_1", True, 30, freeze({"running": 30 - n, "failed": n}))
    return [
        e
        for e in diff_group(GROUP, before, GroupObservation(after, runs), observed_at=NOW)
        if e.kind.value == "group.runs_failed"
    ]


def test_digest_title_names_the_first_runs() -> None:
    message = MessageRenderer(family="text").render(failures(12))
    assert (
        message.title
        == "[FAILED] 12 runs failed in nightly-enrichment: trun_00, trun_01, trun_02, trun_03, trun_04 (+7 more)"
    )


def test_email_default_is_html_with_the_group_counts_table_and_escapes() -> None:
    message = MessageRenderer(family="email").render(failures(3))
    assert message.body_format == "html"
    assert "<table" in message.body
    assert '<td>failed</td><td align="right">3</td>' in message.body
    assert '<td>running</td><td align="right">27</td>' in message.body
    assert "error &lt;1&gt;" in message.body  # customer-ish text is escaped
    assert "error <1>" not in message.body


def test_chat_default_is_markdown_and_sms_is_short() -> None:
    chat = MessageRenderer(family="chat").render(failures(2))
    assert chat.body_format == "markdown"
    assert "• `trun_00` new → *failed*: error <0>" in chat.body
    assert "*Runs:* 30 (failed 2, running 28)" in chat.body
    sms = MessageRenderer(family="sms").render(failures(1))
    assert sms.title == ""
    assert sms.body.startswith("[FAILED] run trun_00 failed in nightly-enrichment: error <0>")
    assert len(sms.body) < 160


def test_user_templates_notifier_then_route() -> None:
    renderer = MessageRenderer(
        family="chat",
        spec=TemplateSpec("{{ count }} x {{ kind }}", "notifier body {{ watch.labels.team }}"),
    )
    message = renderer.render(failures(2))
    assert (message.title, message.body) == ("2 x group.runs_failed", "notifier body data")
    message = renderer.render(failures(2), TemplateSpec(body="route body {{ event.subject_id }}"))
    assert (message.title, message.body) == ("2 x group.runs_failed", "route body trun_01")


def test_broken_template_at_run_time_falls_back_to_the_default() -> None:
    renderer = MessageRenderer(
        family="text", spec=TemplateSpec(body="{{ events[0].details.error.x.y }}")
    )
    message = renderer.render(failures(1))
    assert message.title.startswith("[FAILED] run trun_00")
    assert "trun_00: (new) → failed" in message.body
    assert renderer.template_errors == 1


def test_output_is_capped_even_for_runaway_loops() -> None:
    renderer = MessageRenderer(
        family="text",
        spec=TemplateSpec(body="{% for i in range(100000) %}xxxxxxxxxx{% endfor %}"),
        max_body=1000,
    )
    message = renderer.render(failures(1))
    assert len(message.body) == 1000


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
        ("{% for %}", "template line 1"),
        ("ok\n{{ event.nope.deeper }}", "template line 2"),
    ],
)
def test_sandbox_and_errors(source: str, needle: str) -> None:
    with pytest.raises(TemplateProblem, match=needle):
        check_template(source)


def test_blocked_attributes_render_as_nothing() -> None:
    body = "[{{ event.details.items.__globals__ }}][{{ event.__class__ }}][{{ range.__self__ }}]"
    message = MessageRenderer(family="text", spec=TemplateSpec(body=body)).render(failures(1))
    assert message.body == "[][][]"


def test_context_shape() -> None:
    context = template_context(failures(25))
    assert context["count"] == 25
    assert context["more"] == 5
    assert len(context["listed"]) == 20
    assert context["group"]["counts"] == {"running": 5, "failed": 25}
    assert context["watch"]["labels"] == {"team": "data"}
    assert context["severity"] == "failure"


def test_template_errors_are_caught_at_config_time_with_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            """
notifiers:
  - url: json://x
    tags: [a]
    body_template: |
      fine
      {{ event.details.error | nosuchfilter }}
"""
        )
    (problem,) = info.value.problems
    assert problem.startswith("<config>:3: notifiers[0]: body_template: template line 2")
    assert "nosuchfilter" in problem

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
    assert "trun_00: failed" in message.body
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


@pytest.mark.parametrize(("family", "limit"), [("chat", 700), ("text", 700), ("email", 2500)])
def test_a_digest_fits_the_services_limit_and_says_what_it_left_out(
    family: str, limit: int
) -> None:
    renderer = MessageRenderer(family=family, max_body=limit)  # type: ignore[arg-type]
    message = renderer.render(failures(40))
    assert len(message.body) <= limit
    assert f"more events not shown: this service takes {limit} characters" in message.body
    left_out = int(message.body.rsplit("(+", 1)[1].split(" ", 1)[0])
    shown = sum(f"trun_{i:02d}" in message.body for i in range(40))
    assert shown + left_out == 40  # every event is listed or counted as left out


def test_a_user_template_is_held_to_the_limit_too() -> None:
    huge = TemplateSpec(
        body="{% for e in events %}{{ e.subject_id }} {{ 'x' * 400 }}\n{% endfor %}"
    )
    renderer = MessageRenderer(family="chat", spec=huge, max_body=16383)
    message = renderer.render(failures(100))
    assert len(message.body) <= 16383
    assert "more events not shown" in message.body
    single = MessageRenderer(
        family="chat", spec=TemplateSpec(body="{{ 'y' * 5000 }}"), max_body=1000
    ).render(failures(1))
    assert len(single.body) <= 1000
    assert single.body.endswith("(cut to fit: this service takes 1000 characters a message)")

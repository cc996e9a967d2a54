"""Notification templates: formats, escaping, the "why", and a sandbox that fails loudly."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.alerting.templates import (
    MAX_OUTPUT_CHARS,
    ChannelTemplates,
    Renderer,
    TemplateCheckError,
    check_template,
    explain,
    markdown_escape,
)
from pipeline.models import AlertTransition

HOSTILE = AlertTransition(
    fingerprint="fp",
    rule="power-high",
    state="firing",
    entity="<script>alert('x')</script> & *bold*",
    source="aliunid",
    stream="s",
    metric="sys.kW",
    value=42.5,
    severity="critical",
    ts_ms=1_700_000_000_000,
    summary="draws <b>42.5</b> kW",
    labels={"team": "energy"},
)

RULE = SimpleNamespace(
    type="threshold",
    condition=SimpleNamespace(op=">", value=40.0),
    for_=timedelta(seconds=30),
    annotations={"runbook": "check the breaker"},
)


def _renderer(**formats: ChannelTemplates) -> Renderer:
    return Renderer(
        {
            "t": ChannelTemplates("text"),
            "m": ChannelTemplates("markdown"),
            "h": ChannelTemplates("html"),
            **formats,
        },
        rule_lookup={"power-high": RULE}.get,
    )


def test_html_bodies_escape_every_value() -> None:
    title, body, fmt = _renderer().render("h", "firing", [HOSTILE])
    assert fmt == "html"
    assert "<script>" not in body and "<b>42.5</b>" not in body
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; *bold*" in body
    assert "draws &lt;b&gt;42.5&lt;/b&gt; kW" in body
    # The title is plain text everywhere (an email subject is not HTML).
    assert title == "[FIRING] critical: power-high on <script>alert('x')</script> & *bold*"


def test_markdown_bodies_escape_markdown_and_text_bodies_are_verbatim() -> None:
    _, markdown, _ = _renderer().render("m", "firing", [HOSTILE])
    assert (
        "**FIRING** critical: **power-high** on **\\<script\\>alert('x')\\</script\\> & \\*bold\\***"
        in markdown
    )
    _, text, _ = _renderer().render("t", "firing", [HOSTILE])
    assert text.splitlines()[0] == "draws <b>42.5</b> kW"
    assert markdown_escape("a_b [c](d) `e`") == "a_b \\[c\\](d) \\`e\\`"


def test_why_it_fired_is_available_and_link_free() -> None:
    _, text, _ = _renderer().render("t", "firing", [HOSTILE])
    why = [line for line in text.splitlines() if line.startswith("Why: ")]
    assert why == [
        "Why: Rule power-high fired: sys.kW of <script>alert('x')</script> & *bold* was 42.5, "
        "meeting the condition sys.kW > 40 (held for 30s)."
    ]
    assert "http" not in text


@pytest.mark.parametrize(
    ("rule", "alert_changes", "text"),
    [
        (None, {}, "Rule r fired: m of e was 5."),
        (
            SimpleNamespace(condition=SimpleNamespace(op="outside", low=1.0, high=2.5)),
            {"state": "resolved"},
            "Rule r resolved: m of e is 5, no longer meeting the condition m outside 1 and 2.5.",
        ),
        (
            SimpleNamespace(
                type="aggregate",
                aggregate="avg",
                window=SimpleNamespace(
                    kind="hopping", size=timedelta(minutes=10), hop=timedelta(minutes=1)
                ),
                condition=SimpleNamespace(op=">=", value=4.0),
            ),
            {},
            "Rule r fired: avg of m of e was 5, meeting the condition avg of m >= 4 "
            "(window hopping 10m every 1m).",
        ),
        (
            SimpleNamespace(
                type="aggregate",
                aggregate=SimpleNamespace(percentile=95),
                condition=SimpleNamespace(op=">", value=1.0),
            ),
            {},
            "Rule r fired: p95 of m of e was 5, meeting the condition p95 of m > 1.",
        ),
        (
            SimpleNamespace(type="absence", after=timedelta(minutes=15)),
            {},
            "Rule r fired: no m from e for 15m.",
        ),
        (
            SimpleNamespace(type="absence", after=timedelta(minutes=15)),
            {"state": "resolved"},
            "Rule r resolved: e sends m again.",
        ),
        (
            SimpleNamespace(type="state", target="error", changes=SimpleNamespace(from_="ok")),
            {"value": "error", "metric": "status"},
            "Rule r fired: status of e is 'error' (changed from 'ok').",
        ),
        (
            SimpleNamespace(type="state", target="error", changes=None, for_=timedelta(minutes=1)),
            {"value": "ok", "metric": "status", "state": "resolved"},
            "Rule r resolved: status of e is 'ok', no longer 'error'.",
        ),
    ],
)
def test_explain_every_rule_type(rule: Any, alert_changes: dict[str, Any], text: str) -> None:
    fields: dict[str, Any] = dict(
        fingerprint="f",
        rule="r",
        state="firing",
        entity="e",
        source="s",
        stream="s",
        metric="m",
        value=5.0,
        severity="info",
        ts_ms=0,
    )
    fields.update(alert_changes)
    assert explain(AlertTransition(**fields), rule)["text"] == text


def test_rule_annotations_are_usable() -> None:
    custom = ChannelTemplates(
        "text", body="{{ alert.annotations.runbook }} / {{ alert.why.threshold }}"
    )
    _, body, _ = _renderer(c=custom).render("c", "firing", [HOSTILE])
    assert body == "check the breaker / 40"


ESCAPES = [
    "{{ alert.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ alerts.__class__.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ alert.labels.update({'team': 'x'}) }}",
    "{{ alerts.append(1) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 2 ** 100000 }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_are_refused_at_load_with_a_clear_error(source: str) -> None:
    with pytest.raises(TemplateCheckError, match="refused by the template sandbox: "):
        check_template(source, "text")


def test_other_failures_and_syntax_errors_are_named() -> None:
    with pytest.raises(
        TemplateCheckError, match=r"fails to render a sample firing notification: OverflowError"
    ):
        check_template("{% for i in range(10**9) %}{% endfor %}", "text")
    with pytest.raises(TemplateCheckError, match=r"template syntax error: .*\(template line 2\)"):
        check_template("ok\n{{ oops }", "html")


def test_a_template_that_fails_at_run_time_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sneaky = '{% if alert.entity == "mp-evil" %}{{ alert.__class__.__mro__ }}{% endif %}custom'
    check_template(sneaky, "text")  # the sample alert does not take the hostile branch
    renderer = _renderer(c=ChannelTemplates("text", title=sneaky, body=sneaky))
    evil = AlertTransition(
        **{**{f: getattr(HOSTILE, f) for f in HOSTILE.__struct_fields__}, "entity": "mp-evil"}
    )
    with caplog.at_level(logging.WARNING):
        title, body, _ = renderer.render("c", "firing", [evil])
    assert title == "[FIRING] critical: power-high on mp-evil"
    assert "mro" not in body and "class" not in body and not body.startswith("custom")
    assert "Why: Rule power-high fired" in body
    assert (
        "channel template failed, using the default channel=c part=title error=SecurityError"
        in caplog.text
    )
    assert renderer.render("c", "firing", [HOSTILE])[1] == "custom"


def test_output_is_bounded() -> None:
    big = ChannelTemplates("text", body="{% for i in range(90000) %}x{% endfor %}")
    _, body, _ = _renderer(c=big).render("c", "firing", [HOSTILE])
    assert len(body) <= MAX_OUTPUT_CHARS and body.endswith("[... truncated]")


@pytest.mark.parametrize("channel", ["t", "m", "h"])
def test_shipped_templates_render_every_kind(channel: str) -> None:
    renderer = _renderer()
    resolved = AlertTransition(
        **{
            **{f: getattr(HOSTILE, f) for f in HOSTILE.__struct_fields__},
            "state": "resolved",
            "entity": "mp-2",
        }
    )
    for kind, alerts in [
        ("firing", [HOSTILE]),
        ("resolved", [resolved]),
        ("repeat", [HOSTILE]),
        ("digest", [HOSTILE, resolved]),
        ("test", [HOSTILE]),
    ]:
        title, body, _ = renderer.render(
            channel, kind, alerts, group_labels={"rule": "power-high", "fingerprint": "x"}
        )
        assert title and body
    title, _, _ = renderer.render(
        channel, "digest", [HOSTILE, resolved], group_labels={"rule": "power-high"}
    )
    assert title == "[1 FIRING, 1 RESOLVED] power-high (rule=power-high)"
    title, body, _ = renderer.render(
        channel,
        "suppressed-summary",
        [],
        suppressed=1,
        suppressed_kinds={"firing": 1},
        suppressed_rules={"power-high": 1},
    )
    assert title == f"[SUPPRESSED] 1 more notification to {channel} held back by its rate limit"
    assert "power-high" in body
    assert (
        renderer.render(channel, "test", [HOSTILE])[0]
        == f"[TEST] StreamWarden test notification to {channel}"
    )

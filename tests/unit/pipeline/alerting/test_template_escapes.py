"""Sandbox escapes in every template a user can write never reach a notification.

Two places take templates: rules (``summary``, ``description``; rendered by the rule engine
into the alert) and channels (``templates.title`` / ``body`` in channels.yaml; rendered by the
:class:`~pipeline.alerting.templates.Renderer` the Dispatcher uses). For each classic Jinja2
escape this checks the whole path, YAML file to notification:

* rule templates load (they compile), render the fallback ``[template error in rule ...]``
  instead, and the alert still goes out, without the escape's output;
* channel templates are refused when channels.yaml is loaded, with a message naming the
  channel, the key and the sandbox's reason; a Renderer given one anyway (no check) falls back
  to the shipped template;
* an alert whose *data* looks like a template (an entity named ``{{ ... }}``) is shown as
  text, never evaluated a second time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pipeline.alerting.config import AlertingConfig, load_config
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.templates import FORMATS, ChannelTemplates, Renderer
from pipeline.errors import ConfigError
from pipeline.models import AlertTransition, Measurement
from pipeline.rules.engine import RuleEngine
from pipeline.rules.loader import load_rules

#: Escape attempts, with the attribute the sandbox names when it refuses the channel template.
ESCAPES: list[tuple[str, str]] = [
    ("{{ ''.__class__.__mro__ }}", "'__class__' of 'str'"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__class__' of 'str'"),
    ("{{ cycler.__init__.__globals__ }}", "'__init__' of 'ChainableUndefined'"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "'__init__'"),
    ("{{ joiner.__init__.__globals__ }}", "'__init__' of 'ChainableUndefined'"),
    ("{{ namespace.__init__.__globals__ }}", "'__init__' of 'ChainableUndefined'"),
    ("{{ self.__init__.__globals__ }}", "'__init__' of 'TemplateReference'"),
    (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
        "'_TemplateReference__context' of 'TemplateReference'",
    ),
    ("{{ ''|attr('__class__') }}", "'__class__' of 'str'"),
    ("{{ (value|string).__class__.__base__.__subclasses__() }}", "'__class__' of 'str'"),
    ("{{ ''.join.__self__.__class__ }}", "'__self__' of 'builtin_function_or_method'"),
    ("{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}", "'__class__' of 'str'"),
    ("{{ '{0.__class__}'.format(alert) }}", "'__class__'"),
]
#: Escapes through names the notify sandbox does not define: refused at the test render.
UNDEFINED_IN_NOTIFY = [
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% set ns = namespace() %}{{ ns }}",
]

#: What the output of a successful escape would contain.
LEAK = re.compile(
    r"<class |<function |<built-in |<module |<TemplateReference|object at 0x|__builtins__"
    r"|Cycler|Joiner|Namespace|uid=\d"
)
RULE = "escape-attempt"
FALLBACK = f"[template error in rule '{RULE}': SecurityError]"


def write_rule(folder: Path, summary: str, description: str) -> Path:
    path = folder / "rules.yaml"
    path.write_text(
        "rules:\n"
        f"  - name: {RULE}\n"
        "    type: threshold\n"
        "    match: {source: aliunid, metric: sys.kW}\n"
        "    condition: {op: '>', value: 40}\n"
        f"    summary: {_yaml_str(summary)}\n"
        f"    description: {_yaml_str(description)}\n"
        "    channels: [console]\n",
        encoding="utf-8",
    )
    return path


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def fire(path: Path) -> AlertTransition:
    (rule,) = load_rules([path], known_channels=[])
    engine = RuleEngine([rule])
    measurement = Measurement(
        "aliunid", "hub", "mp-1", "sys.kW", 55.0, "kW", 1_700_000_000_000, {"name": "EV hub"}
    )
    (alert,) = engine.evaluate({}, measurement)
    assert alert.state == "firing"
    return alert


def assert_no_leak(*texts: str) -> None:
    for text in texts:
        assert not LEAK.search(text), text


@pytest.mark.parametrize(("template", "_attribute"), ESCAPES)
def test_rule_templates_render_the_fallback_and_the_alert_still_goes_out(
    tmp_path: Path, template: str, _attribute: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeline.rules.templates")  # repeats log at DEBUG
    alert = fire(write_rule(tmp_path, template, "described: " + template))
    assert alert.summary == FALLBACK
    assert alert.description == FALLBACK
    assert any("error=SecurityError" in r.getMessage() for r in caplog.records)

    renderer = Renderer({f"c-{fmt}": ChannelTemplates(format=fmt) for fmt in FORMATS})
    for fmt in FORMATS:
        title, body, _ = renderer.render(f"c-{fmt}", "firing", [alert])
        assert_no_leak(title, body)
        assert "template error in rule" in body  # the alert is delivered, flagged

    dispatcher = Dispatcher(AlertingConfig.builtin(), Renderer())
    (notification,) = dispatcher.dispatch({}, alert, now_ms=1_700_000_000_500)
    assert notification.channel == "console"
    assert_no_leak(notification.title, notification.body)
    assert FALLBACK in notification.body


def test_rule_templates_still_render_normal_values(tmp_path: Path) -> None:
    """The control: the same path with a harmless template shows the values."""
    alert = fire(write_rule(tmp_path, "{{ labels.name }} at {{ value }} {{ unit }}", "{{ rule }}"))
    assert (alert.summary, alert.description) == ("EV hub at 55.0 kW", RULE)
    (notification,) = Dispatcher(AlertingConfig.builtin(), Renderer()).dispatch({}, alert, 1)
    assert "EV hub at 55.0 kW" in notification.body


def write_channels(folder: Path, part: str, template: str) -> Path:
    path = folder / "channels.yaml"
    path.write_text(
        "channels:\n"
        "  ops:\n"
        "    url_env: OPS_URL\n"
        "    templates:\n"
        f"      {part}: {_yaml_str(template)}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("part", ["title", "body"])
@pytest.mark.parametrize(("template", "attribute"), ESCAPES)
def test_channel_templates_are_refused_at_load_with_a_clear_message(
    tmp_path: Path, part: str, template: str, attribute: str
) -> None:
    path = write_channels(tmp_path, part, template)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: channels.ops.templates.{part}: ")
    assert "refused by the template sandbox: access to attribute " in message
    assert attribute in message
    assert " object is unsafe; " in message
    assert_no_leak(message)


@pytest.mark.parametrize("template", UNDEFINED_IN_NOTIFY)
def test_channel_templates_using_jinja_globals_are_refused_at_load(
    tmp_path: Path, template: str
) -> None:
    """The notify sandbox has no ``lipsum``/``namespace``/``cycler``: using one fails the
    test render, so the file is refused."""
    path = write_channels(tmp_path, "body", template)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: channels.ops.templates.body: ")
    if "__globals__" in template:  # a dunder is refused before the name is even looked up
        assert "refused by the template sandbox: access to attribute '__globals__'" in message
    else:
        assert "fails to render a sample " in message
        assert "UndefinedError: " in message and "is undefined" in message


@pytest.mark.parametrize(("template", "_attribute"), ESCAPES)
def test_renderer_falls_back_to_the_shipped_template_when_an_unchecked_one_escapes(
    template: str, _attribute: str, caplog: pytest.LogCaptureFixture
) -> None:
    alert = AlertTransition(
        fingerprint="f1",
        rule="power-high",
        state="firing",
        entity="mp-1",
        source="aliunid",
        stream="hub",
        metric="sys.kW",
        value=55.0,
        severity="warning",
        ts_ms=1_700_000_000_000,
        summary="mp-1 draws 55 kW",
        channels=("ops",),
    )
    hostile = Renderer({"ops": ChannelTemplates(format="text", title=template, body=template)})
    plain = Renderer({"ops": ChannelTemplates(format="text")})
    assert hostile.render("ops", "firing", [alert]) == plain.render("ops", "firing", [alert])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "channel template failed, using the default channel=ops part=title" in warnings[0]
    assert "channel template failed, using the default channel=ops part=body" in warnings[1]
    assert_no_leak(*warnings)


@pytest.mark.parametrize(("template", "_attribute"), ESCAPES)
def test_alert_data_that_looks_like_a_template_is_shown_not_evaluated(
    template: str, _attribute: str
) -> None:
    alert = AlertTransition(
        fingerprint="f2",
        rule="power-high",
        state="firing",
        entity=template,
        source="aliunid",
        stream="hub",
        metric="sys.kW",
        value=55.0,
        severity="warning",
        ts_ms=1_700_000_000_000,
        summary=template,
        description=template,
        labels={"name": template},
        channels=("console",),
    )
    renderer = Renderer({f"c-{fmt}": ChannelTemplates(format=fmt) for fmt in FORMATS})
    for fmt in FORMATS:
        title, body, _ = renderer.render(f"c-{fmt}", "firing", [alert])
        assert_no_leak(title, body)
    title, body, _ = renderer.render("c-text", "firing", [alert])
    assert template in body  # as text, exactly as it came


# --- once gaps, now closed ---------------------------------------------------------------


def test_rule_templates_see_no_jinja_globals(tmp_path: Path) -> None:
    """The default globals are cleared, and 'self' (Jinja's TemplateReference, in every
    template's scope) is refused when printed instead of showing its repr."""
    alert = fire(write_rule(tmp_path, "{{ lipsum }} {{ cycler }} {{ joiner }}", "{{ self }}"))
    assert_no_leak(alert.summary, alert.description)
    assert "SecurityError" in alert.description


def test_dunder_attributes_of_undefined_names_are_refused(tmp_path: Path) -> None:
    path = write_channels(tmp_path, "body", "{{ lipsum.__globals__ }}")
    with pytest.raises(ConfigError, match="__globals__"):
        load_config(path)

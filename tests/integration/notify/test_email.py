"""Email through apprise to a real SMTP server (aiosmtpd on 127.0.0.1, port 0).

The apprise URL that works against a plain, unauthenticated SMTP server::

    mailto://alerts@example.com?smtp=127.0.0.1&port=<port>&mode=insecure&to=ops@example.com

``mailto://`` (not ``mailtos://``) with ``mode=insecure``: no STARTTLS, no SSL; without a
password apprise does not log in; ``smtp=`` names the server, so the domain of the sender
address (``example.com``) is only the From address and is never looked up.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from pipeline.alerting.config import load_config
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.timers import TrackedState, run_due
from pipeline.models import AlertTransition
from pipeline.notify.channels import Channel, load_channels_from
from pipeline.notify.sender import Notifier, RetryPolicy
from pipeline.notify.tools import build_dispatcher
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

MAILTO = "mailto://alerts@example.com?smtp=127.0.0.1&port={port}&mode=insecure&to=ops@example.com"
FAST = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.01, send_timeout=10, jitter=0)


def _alert(entity: str, ts_ms: int = 1_700_000_000_000) -> AlertTransition:
    return AlertTransition(
        fingerprint=f"fp-{entity}",
        rule="hub-power-high",
        state="firing",
        entity=entity,
        source="aliunid",
        stream="zurich",
        metric="sys.kW",
        value=42.5,
        severity="critical",
        ts_ms=ts_ms,
        summary=f"{entity} draws 42.5 kW",
        description="Power stayed above 40 kW & rising.",
        channels=("ops-email",),
        labels={"team": "energy"},
    )


def _setup(tmp_path: Path, url: str, extra: str = "") -> tuple[Dispatcher, dict[str, Channel]]:
    path = tmp_path / "channels.yaml"
    path.write_text(f"channels:\n  ops-email:\n    url_env: OPS_EMAIL\n{extra}", encoding="utf-8")
    config = load_config(path)
    channels = load_channels_from(config, {"OPS_EMAIL": url})
    return build_dispatcher(config, channels), channels


async def test_html_email_with_subject_plain_and_html_parts(
    tmp_path: Path, smtp_server: Any
) -> None:
    dispatcher, channels = _setup(tmp_path, MAILTO.format(port=smtp_server.port))
    assert channels["ops-email"].format == "html"  # from the mailto:// scheme
    hostile = _alert("<script>alert(1)</script>")
    [notification] = dispatcher.dispatch({}, hostile, now_ms=1)
    delivery = await Notifier(channels, policy=FAST).send(notification)
    assert delivery is not None

    [message] = smtp_server.wait_for(1, 10)
    assert smtp_server.envelopes == [("alerts@example.com", ["ops@example.com"])]
    assert message["Subject"] == "[FIRING] critical: hub-power-high on <script>alert(1)</script>"
    assert message.get_content_type() == "multipart/alternative"
    html = message.get_body(("html",)).get_content()
    plain = message.get_body(("plain",)).get_content()
    # HTML: every value escaped; no live markup from the alert.
    assert "<script>" not in html
    assert (
        "<h3>FIRING critical: hub-power-high on &lt;script&gt;alert(1)&lt;/script&gt;</h3>" in html
    )
    assert "Power stayed above 40 kW &amp; rising." in html
    # Plain text (apprise derives it from the HTML): readable, unescaped.
    assert "FIRING critical: hub-power-high on <script>alert(1)</script>" in plain
    assert "Power stayed above 40 kW & rising." in plain
    assert "Why: Rule hub-power-high fired" in plain


async def test_a_group_becomes_one_digest_email(tmp_path: Path, smtp_server: Any) -> None:
    extra = "routes:\n  - match: [rule=hub-power-high]\n    channels: [ops-email]\n    group_by: [rule]\n    group_wait: 30s\n"
    dispatcher, channels = _setup(tmp_path, MAILTO.format(port=smtp_server.port), extra)
    state = TrackedState()
    for i, entity in enumerate(["mp-1", "mp-2", "mp-3"]):
        assert dispatcher.dispatch(state, _alert(entity, ts_ms=i), now_ms=i) == []
    [digest] = run_due(dispatcher, state, 30_000)
    await Notifier(channels, policy=FAST).send(digest)
    [message] = smtp_server.wait_for(1, 10)
    assert message["Subject"] == "[3 FIRING] hub-power-high (rule=hub-power-high)"
    html = message.get_body(("html",)).get_content()
    assert [e for e in ("mp-1", "mp-2", "mp-3") if f"on {e}</h3>" in html] == [
        "mp-1",
        "mp-2",
        "mp-3",
    ]


async def test_unreachable_server_leaks_no_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = register_secret("smtp-pa55-7781")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"mailto://alerts:{password}@example.com?smtp=127.0.0.1&port={port}&mode=insecure&to=ops@example.com"
    with caplog.at_level(logging.DEBUG):
        dispatcher, channels = _setup(tmp_path, url)
        [notification] = dispatcher.dispatch({}, _alert("mp-1"), now_ms=1)
        # One attempt: apprise spaces calls to one mail server by 5.5 s (its own throttle).
        notifier = Notifier(channels, policy=RetryPolicy(attempts=1, send_timeout=10))
        assert await notifier.send(notification) is None
    assert notifier.counters["failed"] == 1
    assert "notification undelivered channel=ops-email" in caplog.text
    assert password not in caplog.text
    assert password not in repr(notification) and password not in repr(channels["ops-email"])

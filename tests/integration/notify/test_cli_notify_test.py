"""``streamwarden notify test`` as a user runs it: a real process, apprise ``json://``, and a
real HTTP server (tests/support/webhook.py) that accepts, then answers 503."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.secrets import register_secret
from tests.support.webhook import WebhookSink, webhook_server

pytestmark = pytest.mark.integration

SECRET = register_secret("t0ken-3f9a1c")
"""A path segment standing for a webhook token: it must never be printed."""
COMMAND_TIMEOUT = 30.0


def _notify_test(channels: Path, hook: WebhookSink) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STREAMWARDEN_CHANNELS_FILE": str(channels),
        "SW_TEST_HOOK_URL": hook.url(f"/hooks/{SECRET}"),
    }
    return subprocess.run(
        [sys.executable, "-m", "streamwarden", "notify", "test", "hook"],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _assert_no_url(result: subprocess.CompletedProcess[str], hook: WebhookSink) -> None:
    printed = result.stdout + result.stderr
    assert SECRET not in printed
    assert f":{hook.port}" not in printed
    assert "json://" not in printed


def test_notify_test_delivers_then_reports_a_503_without_the_url(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  hook:\n    url_env: SW_TEST_HOOK_URL\n", encoding="utf-8")
    with webhook_server() as hook:
        delivered = _notify_test(channels, hook)
        assert delivered.returncode == 0, delivered.stderr
        assert delivered.stdout == "delivered to hook\n"
        (request,) = hook.wait_for(1, 5)
        assert request["path"] == f"/hooks/{SECRET}"
        assert request["json"]["title"] == "[TEST] StreamWarden test notification to hook"
        assert "nothing is wrong" in request["json"]["message"]
        _assert_no_url(delivered, hook)

        hook.status = 503
        refused = _notify_test(channels, hook)
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == ""
        assert "Traceback" not in refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert errors == [
            "error: not delivered to hook: apprise reported failure, HTTP 503 (retryable)"
        ]
        _assert_no_url(refused, hook)
        assert len(hook.requests) == 1  # the 503s were not recorded as deliveries

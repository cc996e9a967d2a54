"""The cause of an undelivered notification, from apprise's own log lines, without secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.alerting.model import Notification
from pipeline.errors import NotifyError
from pipeline.notify.channels import load_channels
from pipeline.notify.reasons import capture_debug, debug_demand, failure_detail, pass_on_from
from pipeline.notify.sender import Notifier, RetryPolicy
from streamwarden.cli import main
from tests.support.ports import closed_port
from tests.support.secrets import register_secret
from tests.support.webhook import webhook_server

TOKEN = register_secret("hook-t0ken-83b1f2")


@pytest.fixture(name="closed_port")
def _closed_port() -> Iterator[int]:
    with closed_port() as port:
        yield port


class Entry:
    def __init__(self, level: str, message: str) -> None:
        self.level, self.message = level, message


class Result:
    def __init__(self, *entries: Entry) -> None:
        self.entries = entries

    def logs(self) -> tuple[Entry, ...]:
        return self.entries


def test_detail_joins_the_warning_and_the_innermost_cause() -> None:
    result = Result(
        Entry("DEBUG", f"JSON POST URL: http://10.0.0.1/hooks/{TOKEN} (cert_verify=True)"),
        Entry("WARNING", "A Connection error occurred sending JSON notification to 10.0.0.1."),
        Entry(
            "DEBUG",
            "Socket Exception: HTTPConnectionPool(host='10.0.0.1', port=80): Max retries "
            f'exceeded with url: /hooks/{TOKEN} (Caused by NewConnectionError("...: Failed to '
            'establish a new connection: [Errno 111] Connection refused"))',
        ),
    )
    assert failure_detail(result, [TOKEN]) == (
        "A Connection error occurred sending JSON notification to 10.0.0.1 "
        "([Errno 111] Connection refused)"
    )


def test_detail_masks_urls_and_secrets() -> None:
    result = Result(Entry("WARNING", f"could not post to https://h/{TOKEN} with key {TOKEN}"))
    detail = failure_detail(result, [TOKEN])
    assert TOKEN not in detail
    assert detail == "could not post to <url> with key ***"


def test_detail_is_empty_without_logs() -> None:
    assert failure_detail(Result()) == ""
    assert failure_detail(object()) == ""


def _notification() -> Notification:
    return Notification(
        id="n-1",
        channel="hook",
        kind="test",
        alerts=(),
        title="t",
        body="b",
        format="text",
        notify_type="info",
        created_ms=0,
    )


async def test_a_refused_connection_is_named_in_the_reason(
    tmp_path: Path, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  hook:\n    url_env: HOOK\n", encoding="utf-8")
    channels = load_channels(path, env={"HOOK": f"json://127.0.0.1:{closed_port}/{TOKEN}"})
    notifier = Notifier(channels, policy=RetryPolicy(attempts=1, send_timeout=5))
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(NotifyError) as failure:
        await notifier.send_checked(_notification())
    reason = failure.value.reason
    assert reason.startswith("apprise reported failure: A Connection error occurred")
    assert "Connection refused" in reason
    assert TOKEN not in reason
    # apprise's DEBUG lines were captured for the reason, not written to the process's log.
    apprise_records = [r for r in caplog.records if r.name.startswith("apprise")]
    assert apprise_records
    assert all(r.levelno >= logging.INFO for r in apprise_records)


def test_notify_test_prints_the_cause(tmp_path: Path, closed_port: int) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  hook:\n    url_env: SW_HOOK\n", encoding="utf-8")
    result = CliRunner(env={"SW_HOOK": f"json://127.0.0.1:{closed_port}/{TOKEN}"}).invoke(
        main, ["notify", "test", "hook", "--channels-file", str(path)]
    )
    assert result.exit_code == 1, result.output
    assert "not delivered to hook: apprise reported failure: A Connection error" in result.output
    assert "Connection refused" in result.output
    assert result.output.rstrip().endswith("(retryable)")
    assert TOKEN not in result.output


@pytest.fixture
def quiet_apprise() -> Iterator[logging.Logger]:
    """apprise's logger as the worker sets it (:func:`pass_on_from` WARNING), restored after."""
    library = logging.getLogger("apprise")
    level, handlers, propagate = library.level, list(library.handlers), library.propagate
    idle = debug_demand.idle_level
    capture_debug()
    assert pass_on_from(logging.WARNING)
    yield library
    debug_demand.idle_level = idle
    library.setLevel(level)
    library.handlers[:] = handlers
    library.propagate = propagate


def _hook_notifier(tmp_path: Path, url: str, policy: RetryPolicy) -> Notifier:
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  hook:\n    url_env: HOOK\n", encoding="utf-8")
    return Notifier(load_channels(path, env={"HOOK": url}), policy=policy, sleep=_no_wait)


async def _no_wait(_delay: float) -> None:
    return None


async def test_a_quiet_first_attempt_still_classifies_and_the_retry_names_the_cause(
    tmp_path: Path, closed_port: int, quiet_apprise: logging.Logger
) -> None:
    policy = RetryPolicy(attempts=2, initial_delay=0, send_timeout=5, jitter=0)
    with webhook_server() as hook:
        hook.status = 401  # permanent: known from the first (WARNING-level) attempt alone
        notifier = _hook_notifier(tmp_path, hook.url(), policy)
        with pytest.raises(NotifyError) as refused:
            await notifier.send_checked(_notification())
    assert refused.value.reason == "apprise reported failure, HTTP 401"
    assert not refused.value.retryable
    assert notifier.counters["retried"] == 0
    notifier = _hook_notifier(tmp_path, f"json://127.0.0.1:{closed_port}/{TOKEN}", policy)
    with pytest.raises(NotifyError) as down:
        await notifier.send_checked(_notification())
    assert "Connection refused" in down.value.reason  # from the retry's DEBUG lines
    assert notifier.counters["retried"] == 1
    # Back to building WARNING and above only once no call wants DEBUG.
    assert quiet_apprise.level == logging.WARNING

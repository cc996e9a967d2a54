"""Delivery: apprise results classified, retries with backoff, counters, dedup, queues.

Retries wait through an injected sleep that only records the delays: no wall-clock sleeps.
The tests that need a real peer use the local HTTP server of tests/support/webhook.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from apprise.result import AppriseResultStatus

from pipeline.alerting.model import Notification
from pipeline.errors import NotifyError
from pipeline.models import AlertTransition
from pipeline.notify.channels import Channel, load_channels
from pipeline.notify.sender import Delivery, DeliveryQueue, Notifier, RetryPolicy, classify
from tests.support.secrets import register_secret
from tests.support.webhook import webhook_server

ALERT = AlertTransition(
    fingerprint="fp-1",
    rule="hub-power-high",
    state="firing",
    entity="mp-1",
    source="aliunid",
    stream="s",
    metric="sys.kW",
    value=42.5,
    severity="critical",
    ts_ms=1_700_000_000_000,
    summary="mp-1 draws 42.5 kW",
    description="above 40 kW for 2s",
    channels=("hook",),
)

FAST = RetryPolicy(attempts=3, initial_delay=0.5, max_delay=0.75, send_timeout=5, jitter=0)


class Sleeps:
    """Records the delays the notifier asked to wait, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _channels(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  hook:\n    url_env: HOOK\n", encoding="utf-8")
    return load_channels(path, env={"HOOK": url})


def _fields(alert: AlertTransition) -> dict[str, Any]:
    return {f: getattr(alert, f) for f in alert.__struct_fields__}


def _notification(channel: str = "hook", nid: str = "n-1", **kw: Any) -> Notification:
    values: dict[str, Any] = {
        "id": nid,
        "channel": channel,
        "kind": "firing",
        "alerts": (ALERT,),
        "title": "T",
        "body": "**B**",
        "format": "markdown",
        "notify_type": "failure",
        "created_ms": 0,
    }
    values.update(kw)
    return Notification(**values)


# --- against a real HTTP peer -----------------------------------------------------------------


async def test_delivers_title_and_body_and_records_it(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url("/a")), alerts_out=out, policy=FAST)
        delivery = await notifier.send(
            _notification(
                format="text",
                title="[FIRING] critical: hub-power-high on mp-1",
                body="mp-1 draws 42.5 kW\nabove 40 kW for 2s",
            )
        )
        requests = hook.wait_for(1, 5)
    assert delivery is not None and delivery.channel == "hook"
    payload = requests[0]["json"]
    assert requests[0]["path"] == "/a"
    assert payload["title"] == "[FIRING] critical: hub-power-high on mp-1"
    assert payload["message"].splitlines() == ["mp-1 draws 42.5 kW", "above 40 kW for 2s"]
    assert payload["type"] == "failure"
    line = json.loads(out.read_text())
    assert line["fingerprint"] == "fp-1" and line["state"] == "firing" and line["channel"] == "hook"
    assert notifier.counters == {"sent": 1, "failed": 0, "retried": 0, "suppressed": 0}


async def test_server_errors_are_retried_with_backoff_then_reported_undelivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = register_secret("T0KEN-b7f3c2d9e1")
    password = register_secret("pa55-w0rd-9931")
    sleeps = Sleeps()
    with webhook_server() as hook:
        hook.status = 503
        url = f"json://ops:{password}@127.0.0.1:{hook.port}/hooks/{token}"
        with caplog.at_level(logging.DEBUG):
            notifier = Notifier(_channels(tmp_path, url), policy=FAST, sleep=sleeps)
            sent = await notifier.send(_notification())
    assert sent is None
    assert sleeps.delays == [0.5, 0.75]  # exponential, capped at max_delay
    assert notifier.counters == {"sent": 0, "failed": 1, "retried": 2, "suppressed": 0}
    assert notifier.channel_counters()["hook"]["failed"] == 1
    assert (
        "notification undelivered channel=hook id=n-1 kind=firing fingerprints=fp-1" in caplog.text
    )
    assert "reason=apprise reported failure, HTTP 503" in caplog.text
    # apprise and urllib3 log the URL they call at DEBUG: the token and password must not show.
    assert token not in caplog.text
    assert password not in caplog.text


async def test_client_errors_are_permanent(tmp_path: Path) -> None:
    sleeps = Sleeps()
    with webhook_server() as hook:
        hook.status = 401
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST, sleep=sleeps)
        assert await notifier.send(_notification()) is None
    assert sleeps.delays == []
    assert notifier.counters["failed"] == 1 and notifier.counters["retried"] == 0


async def test_unknown_channel_is_permanent_and_other_channels_still_get_it(tmp_path: Path) -> None:
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST, sleep=Sleeps())
        lost = await notifier.send(_notification(channel="nope", nid="n-1"))
        delivered = await notifier.send(_notification(channel="hook", nid="n-2"))
    assert lost is None
    assert delivered is not None and delivered.channel == "hook"
    assert notifier.channel_counters()["nope"]["failed"] == 1
    assert notifier.counters["retried"] == 0


async def test_resolved_is_a_success_notification(tmp_path: Path) -> None:
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST)
        await notifier.send(
            _notification(kind="resolved", notify_type="success", title="[RESOLVED] critical")
        )
        requests = hook.wait_for(1, 5)
    assert requests[0]["json"]["type"] == "success"
    assert requests[0]["json"]["title"] == "[RESOLVED] critical"


async def test_send_delivers_an_intent_once_per_id(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), alerts_out=out, policy=FAST)
        first = await notifier.send(_notification(format="text", body="plain body"))
        again = await notifier.send(_notification(format="text", body="plain body"))
        requests = hook.wait_for(1, 5)
    assert first is not None and again is None
    assert len(requests) == 1
    assert requests[0]["json"]["message"] == "plain body"
    assert requests[0]["json"]["title"] == "T"
    record = json.loads(out.read_text())
    assert (record["id"], record["kind"], record["fingerprints"]) == ("n-1", "firing", ["fp-1"])


async def test_an_empty_body_sends_the_title_instead_of_failing_forever(tmp_path: Path) -> None:
    """apprise refuses an empty body as a plain (retryable) failure; a template that renders
    nothing for some alerts must not hold its lane in retries."""
    sleeps = Sleeps()
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST, sleep=sleeps)
        delivered = await notifier.send(_notification(format="text", title="T only", body=" \n"))
        requests = hook.wait_for(1, 5)
    assert delivered is not None and sleeps.delays == []
    assert (requests[0]["json"]["title"], requests[0]["json"]["message"]) == ("T only", "T only")


async def test_nothing_to_send_is_a_permanent_failure(tmp_path: Path) -> None:
    sleeps = Sleeps()
    with webhook_server() as hook:
        notifier = Notifier(_channels(tmp_path, hook.url()), policy=FAST, sleep=sleeps)
        with pytest.raises(NotifyError) as failure:
            await notifier.send_checked(_notification(format="text", title="", body=""))
    assert not failure.value.retryable and "rendered empty" in failure.value.reason
    assert sleeps.delays == [] and hook.requests == []


# --- classification and backoff (no peer needed) ----------------------------------------------


@dataclass
class FakeResult:
    status: AppriseResultStatus
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.status == AppriseResultStatus.SUCCESS

    def logs(self) -> list[Any]:
        return [type("Entry", (), {"message": m})() for m in self.messages]


@pytest.mark.parametrize(
    ("result", "retryable", "reason"),
    [
        (FakeResult(AppriseResultStatus.NOMATCH), False, "apprise matched no service"),
        (FakeResult(AppriseResultStatus.TIMEOUT), True, "apprise reported timeout"),
        (
            FakeResult(AppriseResultStatus.FAILURE, ["x error=404."]),
            False,
            "apprise reported failure, HTTP 404",
        ),
        (
            FakeResult(AppriseResultStatus.FAILURE, ["Too Many Requests, error=429."]),
            True,
            "apprise reported failure, HTTP 429",
        ),
        (
            FakeResult(AppriseResultStatus.FAILURE, ["error=502."]),
            True,
            "apprise reported failure, HTTP 502",
        ),
        (
            FakeResult(AppriseResultStatus.FAILURE, ["Could not prepare the notification: x"]),
            False,
            "apprise could not prepare the notification",
        ),
        (
            FakeResult(
                AppriseResultStatus.FAILURE, ['Connection error while submitting email to "h"']
            ),
            True,
            'apprise reported failure: Connection error while submitting email to "h"',
        ),
        (FakeResult(AppriseResultStatus.PARTIAL), True, "apprise reported partial"),
    ],
)
def test_classify(result: FakeResult, retryable: bool, reason: str) -> None:
    error = classify("c", result)
    assert (error.retryable, error.reason, error.channel) == (retryable, reason, "c")


def test_delays_grow_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=1, max_delay=10, multiplier=3, jitter=0.1)
    assert RetryPolicy(
        attempts=5, initial_delay=1, max_delay=10, multiplier=3, jitter=0
    ).delays() == [1, 3, 9, 10]
    assert policy.delays(lambda: 0.0) == pytest.approx([0.9, 2.7, 8.1, 9.0, 9.0])
    assert policy.delays(lambda: 0.99999) == pytest.approx([1.1, 3.3, 9.9, 11.0, 11.0], rel=1e-4)
    assert RetryPolicy(attempts=1).delays() == []


class FakeApprise:
    """Stands in for an apprise instance: records calls, answers from a script. Called from
    the notifier's threads, like apprise: ``gate`` holds a call until it is set."""

    def __init__(
        self, results: list[FakeResult] | None = None, gate: threading.Event | None = None
    ) -> None:
        self.calls: list[dict[str, Any]] = []
        self.results = results or []
        self.gate = gate
        self.called = threading.Event()
        self.entered = threading.Event()

    def notify(self, **kwargs: Any) -> FakeResult:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        self.calls.append(kwargs)
        self.called.set()
        return self.results.pop(0) if self.results else FakeResult(AppriseResultStatus.SUCCESS)


async def _set_within(event: threading.Event, seconds: float) -> None:
    assert await asyncio.to_thread(event.wait, seconds), "not called in time"


def _fake_channel(name: str, fake: FakeApprise) -> Channel:
    return Channel(name, "fake://", fake, "markdown")  # type: ignore[arg-type]


async def test_send_passes_format_and_type_and_retries_timeouts() -> None:
    fake = FakeApprise([FakeResult(AppriseResultStatus.TIMEOUT)])
    sleeps = Sleeps()
    notifier = Notifier({"chat": _fake_channel("chat", fake)}, policy=FAST, sleep=sleeps)
    delivery = await notifier.send(_notification("chat"))
    assert delivery is not None and delivery.id == "n-1"
    assert [
        (c["title"], c["body"], c["body_format"], c["notify_type"].value) for c in fake.calls
    ] == [("T", "**B**", "markdown", "failure")] * 2
    assert sleeps.delays == [0.5]
    assert notifier.channel_counters() == {
        "chat": {
            "sent": 1,
            "failed": 0,
            "retried": 1,
            "suppressed": 0,
            "silenced": 0,
            "inhibited": 0,
            "muted": 0,
        }
    }


async def test_queue_keeps_order_per_channel_and_a_slow_channel_does_not_block_others() -> None:
    gate = threading.Event()
    slow, fast = FakeApprise(gate=gate), FakeApprise()
    notifier = Notifier(
        {"slow": _fake_channel("slow", slow), "fast": _fake_channel("fast", fast)}, policy=FAST
    )
    done: list[tuple[str, bool]] = []
    fast_done = asyncio.Event()

    def on_done(notification: Notification, delivery: Delivery | None) -> None:
        done.append((notification.id, delivery is not None))
        if notification.channel == "fast":
            fast_done.set()

    queue = DeliveryQueue(notifier, on_done=on_done)
    for i in range(3):
        assert queue.submit(_notification("slow", f"s{i}", title=f"slow {i}"))
    assert queue.submit(_notification("fast", "f0"))
    await asyncio.wait_for(fast_done.wait(), 5)  # delivered while "slow" is still blocked
    assert [c["title"] for c in fast.calls] == ["T"]
    assert queue.pending() == 3
    assert slow.calls == []
    gate.set()
    assert await queue.join(5)
    assert [c["title"] for c in slow.calls] == ["slow 0", "slow 1", "slow 2"]
    assert sorted(done) == [("f0", True), ("s0", True), ("s1", True), ("s2", True)]
    assert await queue.stop(1) == []
    assert not queue.submit(_notification("fast", "late"))


async def test_stop_hands_back_what_was_not_attempted() -> None:
    gate = threading.Event()
    slow = FakeApprise(gate=gate)
    notifier = Notifier({"slow": _fake_channel("slow", slow)}, policy=FAST)
    queue = DeliveryQueue(notifier, maxsize=2)
    assert queue.submit(_notification("slow", "a"))
    await _set_within(slow.entered, 5)  # the worker took "a" and is blocked
    assert queue.submit(_notification("slow", "b"))
    assert queue.submit(_notification("slow", "c"))
    assert not queue.submit(_notification("slow", "d"))  # full
    left = await queue.stop(0.01)
    assert [n.id for n in left] == ["b", "c"]
    assert notifier.channel_counters()["slow"]["failed"] == 1
    gate.set()  # the call already in apprise ends; nothing after it is attempted
    await _set_within(slow.called, 5)
    assert len(slow.calls) == 1


def _failed_with(code: int) -> FakeResult:
    return FakeResult(
        AppriseResultStatus.FAILURE, [f"Failed to send JSON notification: error={code}."]
    )


async def test_a_run_goes_in_order_and_stops_at_a_permanent_failure() -> None:
    fake = FakeApprise([FakeResult(AppriseResultStatus.SUCCESS), _failed_with(400)])
    notifier = Notifier({"chat": _fake_channel("chat", fake)}, policy=FAST, sleep=Sleeps())
    run = [_notification("chat", f"n{i}", title=f"t{i}") for i in range(3)]
    outcomes = await notifier.send_in_order(run)
    assert isinstance(outcomes[0], Delivery) and outcomes[0].id == "n0"
    assert isinstance(outcomes[1], NotifyError) and not outcomes[1].retryable
    assert len(outcomes) == 2  # n2 was not attempted
    assert [c["title"] for c in fake.calls] == ["t0", "t1"]
    counters = notifier.channel_counters()["chat"]
    assert (counters["sent"], counters["failed"], counters["retried"]) == (1, 1, 0)


async def test_a_send_that_succeeds_on_retry_lets_the_run_go_on() -> None:
    fake = FakeApprise([FakeResult(AppriseResultStatus.SUCCESS), _failed_with(503)])
    sleeps = Sleeps()
    notifier = Notifier({"chat": _fake_channel("chat", fake)}, policy=FAST, sleep=sleeps)
    run = [_notification("chat", f"n{i}", title=f"t{i}") for i in range(3)]
    outcomes = await notifier.send_in_order(run)
    assert [o.id for o in outcomes if isinstance(o, Delivery)] == ["n0", "n1", "n2"]
    assert [c["title"] for c in fake.calls] == ["t0", "t1", "t1", "t2"]
    assert sleeps.delays == [0.5]


async def test_a_cancelled_run_attempts_nothing_after_the_call_in_flight() -> None:
    gate = threading.Event()
    fake = FakeApprise(gate=gate)
    notifier = Notifier({"chat": _fake_channel("chat", fake)}, policy=FAST)
    run = [_notification("chat", f"n{i}", title=f"t{i}") for i in range(3)]
    task = asyncio.create_task(notifier.send_in_order(run))
    await _set_within(fake.entered, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await asyncio.to_thread(notifier.close, wait=True)
    assert [c["title"] for c in fake.calls] == ["t0"]

"""No poison pill: a record whose processing raises is tried once more, then given up with a
reason (the caller dead-letters it and moves on), in every stage."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from pipeline.agents import normalize
from pipeline.agents.evaluate import evaluate_once
from pipeline.agents.notify import NotificationStage, dispatch_once
from pipeline.rules.runtime import RuleRuntime
from tests.unit.pipeline.rules.helpers import meas


class Flaky:
    """Raises ``failures`` times, then answers ``result``."""

    def __init__(self, failures: int, result: Any) -> None:
        self.failures = failures
        self.result = result
        self.calls = 0

    def __call__(self, *_args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ZeroDivisionError("a bug")
        return self.result


def test_a_rule_evaluation_that_fails_once_is_retried() -> None:
    process = Flaky(1, ["transition"])
    runtime = cast(RuleRuntime, SimpleNamespace(process=process))
    assert evaluate_once(runtime, meas(50, 1)) == ["transition"]
    assert process.calls == 2


def test_a_rule_evaluation_that_fails_twice_is_given_up_with_the_reason() -> None:
    process = Flaky(5, [])
    runtime = cast(RuleRuntime, SimpleNamespace(process=process))
    reason = evaluate_once(runtime, meas(50, 1))
    assert reason == "rule evaluation failed: ZeroDivisionError: a bug"
    assert process.calls == 2


def test_a_dispatch_that_fails_twice_is_given_up_and_one_that_recovers_is_not() -> None:
    failing = Flaky(5, [])
    stage = cast(
        NotificationStage, SimpleNamespace(dispatcher=SimpleNamespace(dispatch=failing), state={})
    )
    alert: Any = SimpleNamespace(fingerprint="f1")
    assert dispatch_once(stage, alert, 0) == "dispatch failed: ZeroDivisionError: a bug"
    assert failing.calls == 2
    flaky = Flaky(1, ["notification"])
    stage = cast(
        NotificationStage, SimpleNamespace(dispatcher=SimpleNamespace(dispatch=flaky), state={})
    )
    assert dispatch_once(stage, alert, 0) == ["notification"]


def test_a_normalizer_that_raises_unexpectedly_is_retried_then_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = Flaky(5, [])
    monkeypatch.setattr(normalize, "decode_envelope", lambda value: value)
    monkeypatch.setattr(normalize, "normalize_envelope", broken)
    message = SimpleNamespace(value=b"{}", topic="raw.aliunid.v1")
    assert normalize._normalize_one(message) == "unexpected ZeroDivisionError in normalizer"
    assert broken.calls == 2
    recovering = Flaky(1, ["record"])
    monkeypatch.setattr(normalize, "normalize_envelope", recovering)
    assert normalize._normalize_one(message) == ["record"]

"""Issue 16, defect 1: replay output is strict JSON even when upstream values are huge.

Before the fix a sliding ``avg`` over two aliunid frames of 1e308 and 1.5e308 raised
``OverflowError`` in ``math.fsum``, and a tumbling ``sum`` printed ``"value": Infinity``."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from pipeline.models import AlertTransition
from pipeline.replay import json_value, replay, transition_line
from pipeline.rules.engine import RuleEngine
from producers.envelope import RawEnvelope
from tests.unit.pipeline.rules.helpers import T0, rule

MP = "957f7b09-af00-4b59-b708-e06ae28f7bbb"


def frame(kw: float, offset_ms: int) -> RawEnvelope:
    payload = orjson.dumps({"type": "data", "id": MP, "data": {"sys": {"kW": kw}}}).decode()
    return RawEnvelope("aliunid", "ev-hub", T0 + offset_ms, payload)


@pytest.mark.parametrize(
    ("window", "how"),
    [
        ({"kind": "sliding", "size": "1m"}, "avg"),
        ({"kind": "sliding", "size": "1m"}, "sum"),
        ({"kind": "hopping", "size": "10s", "hop": "5s"}, "sum"),
        ({"kind": "tumbling", "size": "10s"}, "sum"),
    ],
)
def test_two_huge_frames_fire_and_replay_prints_strict_json(
    window: dict[str, str], how: str
) -> None:
    engine = RuleEngine(
        [rule("aggregate", name="big", window=window, aggregate=how, channels=["console"])]
    )
    frames = [frame(1e308, 1_000), frame(1.5e308, 2_000), frame(1.0, 60_000)]
    result = replay(frames, engine)
    fired = [t for t in result.transitions if t.state == "firing"]
    assert fired, result
    for transition in result.transitions:
        line = json.dumps(transition_line(transition), allow_nan=False)
        value = json.loads(line)["value"]
        assert isinstance(value, float) and math.isfinite(value)


def test_a_non_finite_value_is_printed_as_text() -> None:
    alert = AlertTransition(
        fingerprint="f",
        rule="r",
        state="firing",
        entity="e",
        source="aliunid",
        stream="s",
        metric="sys.kW",
        value=math.inf,
        severity="warning",
        ts_ms=0,
        summary="",
    )
    assert json.loads(json.dumps(transition_line(alert), allow_nan=False))["value"] == "inf"
    assert json_value(-math.inf) == "-inf"
    assert json_value(2.5) == 2.5

"""Issue 16, defect 2: an alert record never exceeds the broker's message size; texts are
cut with a marker when upstream names and labels are long."""

from __future__ import annotations

from pipeline.models import encode_record
from pipeline.rules.engine import EngineState, RuleEngine
from pipeline.rules.runtime import RuleRuntime
from pipeline.rules.templates import TRUNCATION_MARKER
from tests.unit.pipeline.rules.helpers import meas, rule

KAFKA_DEFAULT_MAX_BYTES = 1_048_576


def test_a_huge_entity_name_cuts_the_texts_and_the_record_fits() -> None:
    text = "{{ entity }} {{ entity }} {{ entity }}"
    engine = RuleEngine([rule(name="huge", summary=text, description=text, channels=["console"])])
    state: dict[str, EngineState] = {}
    entity = "e" * 1300  # each text renders to ~3.9k characters, within the output budget
    labels = {f"k{i}": "v" * 1000 for i in range(200)}  # 200 KB of labels
    alerts = RuleRuntime(engine, state).process(meas(50.0, 1, entity=entity, labels=labels))
    assert alerts
    record = encode_record(alerts[0])
    assert len(record) < KAFKA_DEFAULT_MAX_BYTES
    assert alerts[0].description.endswith(TRUNCATION_MARKER)


def test_ordinary_texts_are_not_cut() -> None:
    engine = RuleEngine([rule(name="small", summary="{{ entity }} high", channels=["console"])])
    alerts = RuleRuntime(engine, {}).process(meas(50.0, 1))
    assert alerts[0].summary == "mp-1 high"

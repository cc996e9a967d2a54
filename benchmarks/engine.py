"""Rule engine alone, in process, on one core: events/s at 10, 100 and 1,000 rules.

Each rule watches its own metric; events spread over 10 metrics, so every event matches about
one rule whatever the rule count. With the (source, metric) index, 1,000 rules should cost
about what 10 cost: that is what this scenario checks.
"""

from __future__ import annotations

import random
import time
from typing import Any

from pipeline.models import Measurement
from pipeline.rules.engine import RuleEngine
from pipeline.rules.schema import ThresholdRule


def _rules(count: int) -> list[Any]:
    return [
        ThresholdRule.model_validate(
            {
                "name": f"r{i}",
                "type": "threshold",
                "match": {"source": "aliunid", "metric": f"m{i}", "entity": "*"},
                "condition": {"op": ">", "value": 90},
                "severity": "warning",
                "summary": "{{ entity }}",
                "channels": ["console"],
            }
        )
        for i in range(count)
    ]


def run_engine(rule_count: int, events: int, entities: int = 1000) -> dict[str, float]:
    rng = random.Random(3)
    records = [
        Measurement(
            source="aliunid",
            stream="bench",
            entity=f"e{rng.randrange(entities)}",
            metric=f"m{rng.randrange(10)}",
            value=rng.uniform(0, 100),
            unit="kW",
            ts_ms=1_700_000_000_000 + i,
        )
        for i in range(events)
    ]
    engine = RuleEngine(_rules(rule_count))
    state: dict[str, Any] = {}
    transitions = 0
    started = time.process_time()
    for record in records:
        transitions += len(engine.evaluate(state, record))
    cpu = time.process_time() - started
    return {
        "rules": float(rule_count),
        "events": float(events),
        "events_per_s": events / cpu,
        "transitions": float(transitions),
    }

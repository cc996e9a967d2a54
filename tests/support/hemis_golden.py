"""Golden Hemis message bodies captured from the seeded simulator.

``python -m tests.support.hemis_golden`` rewrites ``tests/data/upstream/hemis/*.json``;
``tests/unit/pipeline/normalize/test_hemis.py`` fails when the files and the simulator drift.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

from producers.simulators.hemis import CYCLE_TICKS, HemisSimulator

GOLDEN_DIR = Path(__file__).parents[1] / "data" / "upstream" / "hemis"
GOLDEN_SEED = 2024
#: 2024-07-26T08:00:00Z; the simulated clock advances one second per tick.
GOLDEN_START_S = 1_721_980_800
GOLDEN_BUILDING = "BLD-golden"


def variant(body: dict[str, Any]) -> str:
    """The golden file name (without ``.json``) a message body is an example of."""
    kind = str(body["type"])
    if kind == "SENSOR_STATE":
        if isinstance(body.get("value"), dict):
            return "sensor_state_composite"
        if body.get("factorId") == "SWS":
            return "sensor_state_switch"
        return "sensor_state"
    if kind == "IT_STATE" and body["value"].get("o") != "OK":
        return "it_state_fault"
    if kind in ("DATA_PROVIDER", "NEW_DATA"):
        data = body["container"]["data"]
        shape = "points_in_header" if "data_points" in data["header"] else "points_beside_header"
        unit = "s" if body["timestamp"] < 10**11 else "ms"
        return f"{kind.lower()}_{shape}_{unit}"
    return kind.lower()


def golden_frames() -> dict[str, str]:
    """First body of every variant over one simulator cycle, by variant name."""
    ticks = itertools.count()
    sim = HemisSimulator(
        GOLDEN_BUILDING,
        "golden-token",
        seed=GOLDEN_SEED,
        clock=lambda: float(GOLDEN_START_S + next(ticks)),
    )
    found: dict[str, str] = {}
    for _ in range(CYCLE_TICKS):
        for _topic, body in sim.next_tick_frames():
            found.setdefault(variant(orjson.loads(body)), body)
    return dict(sorted(found.items()))


def write_golden() -> list[Path]:
    """Rewrite the golden files from the simulator; return the paths written."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in golden_frames().items():
        path = GOLDEN_DIR / f"{name}.json"
        path.write_text(body, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_golden():
        print(written_path)

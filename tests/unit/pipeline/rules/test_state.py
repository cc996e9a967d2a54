"""Engine state: msgpack round trips of every entry kind, refusal of foreign bytes, size."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.rules.engine import (
    AbsenceState,
    AlertState,
    EngineState,
    Phase,
    RuleEngine,
    StateFormatError,
    Subject,
    WindowState,
    decode_state,
    encode_state,
)
from pipeline.windows import new_pane
from tests.unit.pipeline.rules.helpers import T0, meas, rule

SUBJECT = Subject("NOR_01333/0", "nobil", "nobil-no", "error", "", {"site": "oslo"})


@pytest.mark.parametrize(
    "entry",
    [
        AlertState("r", 1, SUBJECT, Phase("pending", T0, 41.5), T0),
        AlertState("r", 1, SUBJECT, Phase("firing", T0, "error", T0 + 5, "ok"), T0, "ok", "error"),
        AlertState("r", 1, SUBJECT, None, T0, "ok", None),
        WindowState("r", 2**32 - 1, SUBJECT, None, T0, None, (new_pane(T0, T0, 1.5, 4),)),
        AbsenceState("r", 7, SUBJECT, T0, 21.5, T0 + 900_000),
    ],
)
def test_every_entry_kind_round_trips(entry: EngineState) -> None:
    data = encode_state(entry)

    assert decode_state(data) == entry
    assert type(decode_state(data)) is type(entry)


def test_foreign_bytes_are_refused_with_one_error_type() -> None:
    old_format = msgspec.msgpack.encode({"state": "firing", "since_ms": T0})

    with pytest.raises(StateFormatError):
        decode_state(old_format)
    with pytest.raises(StateFormatError):
        decode_state(b"\xff\x00")


def test_entries_are_small() -> None:
    engine = RuleEngine(
        [
            rule(for_="1m"),
            rule("aggregate", name="agg"),
            rule("absence", name="abs", match={"metric": "sys.kW"}),
        ]
    )
    state: dict[str, EngineState] = {}
    for i in range(30):
        engine.evaluate(state, meas(50, i))

    sizes = sorted(len(encode_state(entry)) for entry in state.values())

    assert len(sizes) == 3
    # the largest is the aggregate entry: its open pane plus the seen keys of the 10 records
    # in it (redelivery detection, about 5 bytes each)
    assert sizes[-1] < 240, sizes

"""Lag arithmetic behind "follow the wall clock only once caught up"."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pipeline.agents.progress import CatchUp, ConsumeProgress

A0 = TP("measurements.v1", 0)
S0 = TP("states.v1", 0)


@dataclass
class ConsumerView:
    """What ConsumeProgress reads of faust's consumer: assignment, high-water marks and the
    committed offsets (faust's own bookkeeping attribute)."""

    highwaters: dict[TP, int | None]
    _committed_offset: dict[TP, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]


def events(tp: TP, *offsets: int) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=o)) for o in offsets]


def test_lag_counts_from_processed_offsets_and_falls_back_to_committed() -> None:
    consumer = ConsumerView({A0: 10, S0: 4}, {S0: 4})
    progress = ConsumeProgress(lambda: consumer)
    assert progress.lag(A0) == 10  # nothing processed, nothing committed
    assert progress.lag(S0) == 0  # resumed at the committed end, nothing new
    progress.note(events(A0, 5, 6, 7))
    assert progress.lag(A0) == 2
    progress.note(events(A0, 3))  # a redelivered older record never moves progress back
    assert progress.lag(A0) == 2
    progress.note(events(A0, 8, 9))
    assert progress.caught_up([A0, S0])


def test_unknown_highwater_or_unassigned_partition_is_not_caught_up() -> None:
    consumer = ConsumerView({A0: None})
    progress = ConsumeProgress(lambda: consumer)
    assert progress.lag(A0) is None
    assert progress.lag(S0) is None
    assert not progress.caught_up([A0])


def test_catch_up_needs_two_checks_in_a_row_and_a_raw_backlog_holds_every_partition() -> None:
    consumer = ConsumerView({A0: 2, S0: 0})
    progress = ConsumeProgress(lambda: consumer)
    normalize = {"caught_up": True}
    catch_up = CatchUp(
        progress,
        lambda p: [TP("measurements.v1", p), TP("states.v1", p)],
        upstream_caught_up=lambda: normalize["caught_up"],
    )
    progress.note(events(A0, 0, 1))
    assert catch_up.check({0}) == set()  # first positive answer: not yet
    assert catch_up.lagging == {0}
    assert catch_up.check({0}) == {0}
    assert catch_up.lagging == set()
    normalize["caught_up"] = False  # the normalize stage has a raw backlog
    assert catch_up.check({0}) == set()
    normalize["caught_up"] = True
    assert catch_up.check({0}) == set()
    assert catch_up.check({0}) == {0}

"""Issue 16, defect 1: finite but huge values never make an aggregate raise or go non-finite.

Before the fix, ``math.fsum`` raised ``OverflowError`` on two records of 1e308 and 1.5e308
(the worker died on every redelivery), and a tumbling ``sum`` reached ``inf`` (encoded as
``null``, undecodable downstream)."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.windows import (
    AGGREGATES,
    MAX_FLOAT,
    Pane,
    add_to_panes,
    aggregate,
    new_pane,
    saturating_sum,
    sliding_insert,
)

HUGE = (1e308, 1.5e308)


def sliding_cells(values: tuple[float, ...]) -> tuple[Pane, ...]:
    cells: tuple[Pane, ...] = ()
    for i, value in enumerate(values):
        cells = sliding_insert(cells, 1_000 + i, value, 1_000 + i, 60_000, 0)
    return cells


@pytest.mark.parametrize("how", AGGREGATES)
def test_every_aggregate_of_two_huge_sliding_records_is_finite_json(how: str) -> None:
    result = aggregate(sliding_cells(HUGE), how)  # type: ignore[arg-type]
    assert result is not None
    assert math.isfinite(result)
    json.dumps(result, allow_nan=False)  # raises on inf / nan


def test_average_of_huge_values_divides_before_it_overflows() -> None:
    assert aggregate(sliding_cells(HUGE), "avg") == pytest.approx(1.25e308)


def test_sum_saturates_at_the_largest_float() -> None:
    assert aggregate(sliding_cells(HUGE), "sum") == MAX_FLOAT
    assert aggregate(sliding_cells((-1e308, -1.5e308)), "sum") == -MAX_FLOAT


def test_a_tumbling_pane_total_saturates_instead_of_reaching_inf() -> None:
    panes = add_to_panes((), 1_000, 1e308, 10_000, 0)
    panes = add_to_panes(panes, 2_000, 1.5e308, 10_000, 0)
    assert panes[0].total == MAX_FLOAT
    assert aggregate(panes, "sum") == MAX_FLOAT
    assert math.isfinite(aggregate(panes, "avg") or math.inf)


def test_an_intermediate_overflow_keeps_the_exact_sum() -> None:
    assert saturating_sum([1e308, 1e308, -1e308]) == 1e308
    assert saturating_sum([1.0, 2.0, 3.0]) == 6.0


def test_inf_totals_of_older_state_saturate_instead_of_raising() -> None:
    legacy = (
        Pane(0, 1, math.inf, 1.0, math.inf, 0, 1.0, 1, math.inf),
        Pane(10, 1, -math.inf, -math.inf, 1.0, 10, -math.inf, 11, 1.0),
    )
    for how in AGGREGATES:
        result = aggregate(legacy, how)
        assert result is None or math.isfinite(result), how


def test_rate_between_huge_values_of_opposite_sign_saturates() -> None:
    cells = sliding_cells((-1.5e308, 1.5e308))
    assert aggregate(cells, "rate") == MAX_FLOAT


def test_ordinary_values_are_unchanged() -> None:
    cells = sliding_cells((1.0, 2.0, 4.0))
    assert aggregate(cells, "sum") == 7.0
    assert aggregate(cells, "avg") == pytest.approx(7 / 3)
    assert aggregate(cells, "rate") == 1500.0  # (4 - 1) over 2 ms
    assert aggregate((new_pane(0, 0, 5.0, 0),), "last") == 5.0

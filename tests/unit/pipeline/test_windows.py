"""Pure window functions: panes, alignment, window closing, sliding cells, aggregates,
bounded percentile samples, seen keys of redelivery detection."""

from __future__ import annotations

import pytest

from pipeline.windows import (
    MAX_SLIDING_CELLS,
    Pane,
    add_to_panes,
    aggregate,
    merge_panes,
    new_pane,
    next_window_end,
    pane_add,
    pane_start,
    percentile,
    seen_add,
    seen_has,
    sliding_insert,
    value_key,
    window_panes,
)


def sampled(pane: Pane) -> int:
    return sum(len(level) for level in pane.sample)


def weight(pane: Pane) -> int:
    return sum(len(level) << h for h, level in enumerate(pane.sample))


def panes_of(records: list[tuple[int, float]], pane_ms: int, cap: int = 0) -> tuple[Pane, ...]:
    panes: tuple[Pane, ...] = ()
    for ts, value in records:
        panes = add_to_panes(panes, ts, value, pane_ms, cap)
    return panes


def test_pane_start_is_aligned_also_before_the_epoch() -> None:
    assert pane_start(12_345, 1000) == 12_000
    assert pane_start(12_000, 1000) == 12_000
    assert pane_start(-1, 1000) == -1000


def test_pane_accumulates_out_of_order_records() -> None:
    pane = new_pane(0, 500, 5.0, 0)
    pane = pane_add(pane, 100, 1.0, 0)
    pane = pane_add(pane, 900, 9.0, 0)
    pane = pane_add(pane, 900, 7.0, 0)  # same time, later arrival: the new last

    assert (pane.count, pane.total, pane.low, pane.high) == (4, 22.0, 1.0, 9.0)
    assert (pane.first_ms, pane.first, pane.last_ms, pane.last) == (100, 1.0, 900, 7.0)
    assert pane.sample == ()


def test_records_go_to_their_aligned_pane_in_order() -> None:
    panes = panes_of([(2500, 1), (500, 2), (2999, 3), (1000, 4)], 1000)

    assert [(p.start_ms, p.count) for p in panes] == [(0, 1), (1000, 1), (2000, 2)]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("avg", 2.5),
        ("min", 1.0),
        ("max", 4.0),
        ("sum", 10.0),
        ("count", 4.0),
        ("last", 3.0),  # the latest event time, 3500
        ("rate", (3.0 - 2.0) * 1000 / (3500 - 500)),
        (50.0, 2.0),
        (75.0, 3.0),
        (99.0, 4.0),
    ],
)
def test_aggregates_over_several_panes(how: str | float, expected: float) -> None:
    panes = panes_of([(2500, 4), (500, 2), (1500, 1), (3500, 3)], 1000, cap=16)

    assert aggregate(panes, how) == pytest.approx(expected)  # type: ignore[arg-type]


def test_no_result_for_no_panes_or_rate_of_one_instant() -> None:
    assert aggregate([], "avg") is None
    assert aggregate(panes_of([(5, 1.0), (5, 3.0)], 10), "rate") is None
    assert aggregate(panes_of([(5, 1.0)], 10), 50.0) is None  # no sample kept (cap 0)


def test_windows_close_in_order_and_skip_empty_stretches() -> None:
    panes = panes_of([(1000, 1), (6000, 1), (31_000, 1)], 5000)

    assert next_window_end(panes, None, 5000) == 5000  # [-5000, 5000) holds the first pane
    assert next_window_end(panes, 5000, 5000) == 10_000
    assert [p.start_ms for p in window_panes(panes, 10_000, 10_000)] == [0, 5000]
    later = tuple(p for p in panes if p.start_ms > 15_000 - 10_000)
    assert next_window_end(later, 15_000, 5000) == 35_000  # jumps over windows with no pane
    assert next_window_end((), 15_000, 5000) is None


def test_percentile_is_nearest_rank_and_exact_below_the_cap() -> None:
    panes = panes_of([(i, float(v)) for i, v in enumerate(range(100, 0, -1))], 1000, cap=1000)

    assert [percentile(panes, p) for p in (1, 50, 95, 99, 99.5)] == [1, 50, 95, 99, 100]


def test_percentile_sample_is_bounded_and_deterministic() -> None:
    values = [float((i * 7919) % 100_000) for i in range(100_000)]
    records = [(i, v) for i, v in enumerate(values)]

    first = panes_of(records, 10**9, cap=512)
    second = panes_of(records, 10**9, cap=512)

    (pane,) = first
    assert first == second
    assert sampled(pane) <= 512 + 2 * len(pane.sample)
    assert weight(pane) == 100_000  # compaction keeps the total weight exact
    for p in (1, 10, 50, 90, 99):
        estimate = percentile(first, p)
        assert estimate is not None
        assert abs(estimate - p * 1000) <= 1000, p  # within 1% of the range


@pytest.mark.parametrize("order", ["ascending", "descending", "sawtooth"])
def test_percentile_sketch_handles_ordered_input(order: str) -> None:
    n = 20_000
    values = {
        "ascending": list(range(n)),
        "descending": list(range(n - 1, -1, -1)),
        "sawtooth": [i % 1000 * 20 + i // 1000 for i in range(n)],
    }[order]

    panes = panes_of([(i, float(v)) for i, v in enumerate(values)], 10**9, cap=256)

    for p in (5, 50, 95):
        estimate = percentile(panes, p)
        assert estimate is not None
        assert abs(estimate - p * n / 100) <= 0.02 * n, (p, estimate)


def test_merging_panes_of_different_weights_keeps_the_bound() -> None:
    heavy = panes_of([(i, float(i)) for i in range(1000)], 10**9, cap=64)[0]
    light = new_pane(0, 5, 500.0, 64)

    merged = merge_panes(heavy, light, 64)

    assert merged.count == 1001
    assert sampled(merged) <= 64 + 2 * len(merged.sample)
    assert weight(merged) == 1001
    assert (merged.low, merged.high) == (0.0, 999.0)


def test_sliding_cells_are_exact_while_few() -> None:
    cells: tuple[Pane, ...] = ()
    for ts, value in [(1000, 1.0), (5000, 2.0), (3000, 3.0), (12_000, 4.0)]:
        cells = sliding_insert(cells, ts, value, max(ts, 5000), 10_000, 0)

    # the window (12000 - 10000, 12000] no longer holds the record at 1000
    assert [(c.first_ms, c.last) for c in cells] == [(3000, 3.0), (5000, 2.0), (12_000, 4.0)]
    assert aggregate(cells, "sum") == 9.0


def test_sliding_cells_merge_by_slot_when_too_many() -> None:
    cells: tuple[Pane, ...] = ()
    for i in range(10_000):  # 100 per second over a 10 s window: 1000 records in the window
        cells = sliding_insert(cells, i * 10, 1.0, i * 10, 10_000, 4)

    assert len(cells) <= MAX_SLIDING_CELLS
    count = aggregate(cells, "count")
    assert count is not None
    assert 1000 <= count <= 1000 + 10_000 // 128  # exact but for one slot at the old edge
    assert all(sampled(c) <= 4 + 2 * len(c.sample) for c in cells)


# --- seen keys ----------------------------------------------------------------------------------


def test_seen_keys_find_the_same_time_and_value_only() -> None:
    seen, dropped = seen_add((), 1000, 1000, 1000, 2.5, 0)
    seen, dropped = seen_add(seen, 1000, 1200, 1200, 7.0, 0)

    assert dropped is None
    assert seen_has(seen, 1200, 1000, 2.5)
    assert seen_has(seen, 1200, 1200, 7.0)
    assert not seen_has(seen, 1200, 1000, 2.6)
    assert not seen_has(seen, 1200, 1001, 2.5)
    assert not seen_has(seen, 1200, 1300, 7.0)  # after the watermark: new
    assert value_key(0.0) == value_key(-0.0)


def test_seen_keys_move_with_the_watermark_and_are_pruned() -> None:
    seen: tuple[int, ...] = ()
    for ts in range(0, 10_000, 1000):
        seen, _ = seen_add(seen, max(ts - 1000, 0), ts, ts, 1.0, 0)

    pruned, dropped = seen_add(seen, 9000, 12_000, None, 0.0, 6000)

    assert dropped is None
    assert len(pruned) == 4  # 6000, 7000, 8000, 9000
    assert seen_has(pruned, 12_000, 6000, 1.0)
    assert not seen_has(pruned, 12_000, 5000, 1.0)
    assert seen_add(pruned, 12_000, 12_000, None, 0.0, 6000) == (pruned, None)


def test_seen_keys_past_the_cap_drop_whole_event_times() -> None:
    seen: tuple[int, ...] = ()
    for ts, value in [(1, 1.0), (2, 1.0), (2, 2.0), (3, 1.0)]:
        seen, dropped = seen_add(seen, 3, 3, ts, value, 0, cap=2)

    assert dropped == 3  # room for one key at 2 only: both went
    assert len(seen) == 1
    assert seen_has(seen, 3, 3, 1.0)

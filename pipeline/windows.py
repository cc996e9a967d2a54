"""Pure window and aggregate functions: values in, numbers out; no faust, no clock.

Everything here is a plain function over immutable :class:`Pane` values, with every time an
explicit ``*_ms`` argument, so the rule engine can keep panes in its msgpack state and tests
can call the functions directly.

Panes
    A :class:`Pane` accumulates the records of one stretch of event time: count, sum, min,
    max, the first and last value by event time, and (only when a percentile is asked for) a
    bounded sample of values. Panes merge without loss for every aggregate except
    percentiles, so a window is the merge of its panes.

Tumbling and hopping windows
    Windows are aligned to the epoch: a window of ``size`` starts at every multiple of
    ``hop`` (tumbling: ``hop == size``) and covers ``[start, start + size)``. ``size`` must be
    a multiple of ``hop``, so every window is the union of ``size / hop`` panes of ``hop``
    each, and a record updates exactly one pane (:func:`pane_start`) however many windows
    hold it. See :func:`next_window_end` and :func:`window_panes`.

Sliding windows
    The window ending at event time ``t`` covers ``(t - size, t]``. Each record first gets a
    cell (a pane) of its own, so the aggregate is exact; when more than
    :data:`MAX_SLIDING_CELLS` cells would be kept, cells falling into the same
    ``size / SLIDING_SLOTS`` slot are merged (:func:`sliding_insert`). From then on the old
    edge of the window is accurate to one slot (a merged cell straddling the edge counts
    whole); the other aggregates stay exact.

Percentiles
    Nearest-rank over a sample: the smallest sampled value whose cumulative weight reaches
    ``p`` percent of the total. A pane's sample is a small KLL sketch: levels of sorted
    values, a value of level ``h`` standing for ``2**h`` records. Every record enters level
    0; a level holding more than its capacity (``sample_cap / 3`` for the top level, two
    thirds of the level above for each lower one, at least 2) passes every other value of an
    even number of them, sorted, to the next level. So the sample is exact until a pane holds
    ``sample_cap / 3`` records, and holds at most about ``sample_cap + 2 * levels`` values
    (levels grow with log2 of the records). Which half is passed on is a coin flipped by
    hashing the record count and level: deterministic, so the result depends only on the
    values and their order. The rule engine sizes ``sample_cap`` so one entity of one rule
    keeps at most about :data:`PERCENTILE_BUDGET` values.

Aggregates (:func:`aggregate`): ``avg``, ``min``, ``max``, ``sum``, ``count``, ``last`` (value
with the latest event time; on a tie the later arrival), ``rate`` (change per second between
the first and the last value by event time; no result below two distinct timestamps; no
counter-reset handling) and a percentile given as a float. A window without a result (empty,
or ``rate`` from a single timestamp) yields ``None``.

Overflow
    Upstream values are finite but may be huge: ``1e308 + 1.5e308`` overflows a float, and
    ``math.fsum`` raises ``OverflowError`` on it. An exception here would stop the rule
    engine on every redelivery of the same records, so sums, totals, averages and rates
    *saturate* instead: a result beyond the float range becomes ``±MAX_FLOAT``
    (:data:`sys.float_info.max`), never ``inf``. :func:`aggregate` therefore returns a finite
    number for finite inputs (and for saturated pane totals kept in state), so every value it
    yields encodes as JSON. Averages divide before summing when the sum would overflow, so the
    average of ``1e308`` and ``1.5e308`` is ``1.25e308``, not a saturated value; a pane total
    that saturated is flagged by being exactly ``±MAX_FLOAT``.

Redelivery (:func:`seen_add`, :func:`seen_has`)
    The pipeline is at-least-once: after a crash the rule engine sees records again that it
    had already applied, and an aggregate would count them twice. So the engine remembers a
    *seen key* per applied record that could still be accepted (not late): its event time
    (relative to the watermark) and a 16-bit hash of its value in one small integer, kept
    sorted; a record whose key is held is refused (a record after the watermark is new
    without a look-up). Two genuinely distinct records of one entity and metric with the same
    event time and value are therefore counted once (upstreams do not emit those); so, with
    odds of 1 in 65536, are two with the same event time and values of equal hash.

    Bound: keys are pruned as the watermark advances, so only the records of one entity
    within the lateness horizon are kept: about ``(grace + hop) x records per second`` for
    tumbling/hopping windows (a record is late once its pane has closed) and
    ``min(grace, size) x records per second`` for sliding windows, about 5 bytes each in
    msgpack, and never more than :data:`MAX_SEEN_KEYS`: past that the oldest keys (whole
    event times) are dropped and records older than the oldest kept become late, so a
    duplicate is never counted twice. Entries written before seen keys existed have none:
    records applied before the upgrade are not recognised.
"""

from __future__ import annotations

import bisect
import math
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import msgspec

__all__ = [
    "AGGREGATES",
    "MAX_FLOAT",
    "MAX_SEEN_KEYS",
    "MAX_SLIDING_CELLS",
    "PERCENTILE_BUDGET",
    "SLIDING_SLOTS",
    "AggregateName",
    "Pane",
    "add_to_panes",
    "aggregate",
    "merge_panes",
    "new_pane",
    "next_window_end",
    "pane_add",
    "pane_start",
    "percentile",
    "saturate",
    "saturating_sum",
    "seen_add",
    "seen_has",
    "sliding_insert",
    "value_key",
    "window_panes",
]

AggregateName = Literal["avg", "min", "max", "sum", "count", "last", "rate"]
AGGREGATES: Final[tuple[AggregateName, ...]] = (
    "avg",
    "min",
    "max",
    "sum",
    "count",
    "last",
    "rate",
)
PERCENTILE_BUDGET: Final = 2048
"""Most sampled values one entity of one percentile rule keeps, over all its panes."""
SLIDING_SLOTS: Final = 128
"""A sliding window's time resolution once its cells are merged: ``size / SLIDING_SLOTS``."""
MAX_SLIDING_CELLS: Final = 256
"""Most cells a sliding window keeps; past it, cells in the same slot are merged."""
MAX_SEEN_KEYS: Final = 1024
"""Most seen keys (redelivery detection) one entity of one aggregate rule keeps."""


MAX_FLOAT: Final = sys.float_info.max
"""Largest finite float: what an overflowing sum, average or rate saturates to."""
_SCALE: Final = 2.0**-64
"""Exact power-of-two scale for summing near the float range (see :func:`saturating_sum`)."""


def saturate(value: float) -> float:
    """``value`` clamped to ``[-MAX_FLOAT, MAX_FLOAT]`` (``inf`` becomes ``MAX_FLOAT``; NaN
    stays NaN)."""
    if value > MAX_FLOAT:
        return MAX_FLOAT
    if value < -MAX_FLOAT:
        return -MAX_FLOAT
    return value


def saturating_sum(values: Iterable[float]) -> float:
    """The exact sum of ``values`` (``math.fsum``), saturated instead of overflowing.

    ``math.fsum`` raises ``OverflowError`` when a partial sum leaves the float range, even if
    the final sum would fit, and ``ValueError`` on ``inf + -inf``. Here inputs are first
    saturated; on overflow the values are summed scaled by an exact power of two (so
    ``1e308 + 1e308 - 1e308`` is still ``1e308``), and a result still out of range
    saturates.
    """
    finite = [saturate(v) for v in values]
    try:
        return math.fsum(finite)
    except OverflowError:
        return saturate(math.fsum(v * _SCALE for v in finite) / _SCALE)


def _saturating_add(a: float, b: float) -> float:
    return saturate(saturate(a) + saturate(b))


class Pane(msgspec.Struct, frozen=True, array_like=True):
    """Accumulated records of one stretch of event time.

    Attributes:
        start_ms: pane start (tumbling/hopping: aligned; sliding: start of the cell's slot).
        count: number of records.
        total: sum of the values.
        low, high: smallest and largest value.
        first_ms, first: earliest event time and its value.
        last_ms, last: latest event time and its value.
        sample: KLL levels of sorted values, level ``h`` weighing ``2**h``; empty unless a
            percentile is computed.
    """

    start_ms: int
    count: int
    total: float
    low: float
    high: float
    first_ms: int
    first: float
    last_ms: int
    last: float
    sample: tuple[tuple[float, ...], ...] = ()


def pane_start(ts_ms: int, pane_ms: int) -> int:
    """Start of the aligned pane of length ``pane_ms`` holding ``ts_ms`` (also before 1970)."""
    return ts_ms - ts_ms % pane_ms


def new_pane(start_ms: int, ts_ms: int, value: float, sample_cap: int) -> Pane:
    """A pane holding one record; ``sample_cap == 0`` keeps no sample."""
    sample = ((value,),) if sample_cap > 0 else ()
    return Pane(start_ms, 1, value, value, value, ts_ms, value, ts_ms, value, sample)


def pane_add(pane: Pane, ts_ms: int, value: float, sample_cap: int) -> Pane:
    """``pane`` with one more record (records may come in any order of event time)."""
    first_ms, first = (ts_ms, value) if ts_ms < pane.first_ms else (pane.first_ms, pane.first)
    last_ms, last = (ts_ms, value) if ts_ms >= pane.last_ms else (pane.last_ms, pane.last)
    sample = pane.sample
    if sample_cap > 0:
        levels = [list(level) for level in sample] or [[]]
        bisect.insort(levels[0], value)
        sample = _compress(levels, sample_cap, pane.count + 1)
    return Pane(
        pane.start_ms,
        pane.count + 1,
        _saturating_add(pane.total, value),
        min(pane.low, value),
        max(pane.high, value),
        first_ms,
        first,
        last_ms,
        last,
        sample,
    )


def merge_panes(a: Pane, b: Pane, sample_cap: int) -> Pane:
    """One pane holding the records of both; ``start_ms`` is the earlier start."""
    first_ms, first = (b.first_ms, b.first) if b.first_ms < a.first_ms else (a.first_ms, a.first)
    last_ms, last = (b.last_ms, b.last) if b.last_ms >= a.last_ms else (a.last_ms, a.last)
    sample: tuple[tuple[float, ...], ...] = ()
    if sample_cap > 0:
        depth = max(len(a.sample), len(b.sample))
        levels = [
            sorted(
                (a.sample[h] if h < len(a.sample) else ())
                + (b.sample[h] if h < len(b.sample) else ())
            )
            for h in range(depth)
        ]
        sample = _compress(levels or [[]], sample_cap, a.count + b.count)
    return Pane(
        min(a.start_ms, b.start_ms),
        a.count + b.count,
        _saturating_add(a.total, b.total),
        min(a.low, b.low),
        max(a.high, b.high),
        first_ms,
        first,
        last_ms,
        last,
        sample,
    )


def _coin(salt: int, level: int) -> int:
    """A reproducible fair bit from two integers (a multiplicative hash, top bit)."""
    mixed = ((salt + 1) * 0x9E3779B97F4A7C15 ^ (level + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    mixed = (mixed ^ (mixed >> 31)) * 0x94D049BB133111EB & _MASK64
    return mixed >> 63


_MASK64: Final = (1 << 64) - 1


def _compress(levels: list[list[float]], cap: int, salt: int) -> tuple[tuple[float, ...], ...]:
    """Compact sorted KLL ``levels`` (bottom first) that hold more than their capacity.

    Which half of a compacted run moves up is a coin flipped by hashing ``salt`` (the record
    count) with the level: unbiased like KLL's random coin, yet reproducible.
    """
    top_capacity = max(2, cap // 3)
    h = 0
    while h < len(levels):
        capacity = max(2, int(top_capacity * (2 / 3) ** (len(levels) - 1 - h)))
        level = levels[h]
        if len(level) > capacity:
            even = len(level) - len(level) % 2
            run, rest = level[:even], level[even:]
            if h + 1 == len(levels):
                levels.append([])
            levels[h + 1] = sorted(levels[h + 1] + run[_coin(salt, h) :: 2])
            levels[h] = rest
        h += 1
    return tuple(tuple(level) for level in levels)


def add_to_panes(
    panes: tuple[Pane, ...], ts_ms: int, value: float, pane_ms: int, sample_cap: int
) -> tuple[Pane, ...]:
    """Aligned ``panes`` (sorted by start) with the record added to its pane."""
    start = pane_start(ts_ms, pane_ms)
    starts = [p.start_ms for p in panes]
    i = bisect.bisect_left(starts, start)
    if i < len(panes) and panes[i].start_ms == start:
        return (*panes[:i], pane_add(panes[i], ts_ms, value, sample_cap), *panes[i + 1 :])
    return (*panes[:i], new_pane(start, ts_ms, value, sample_cap), *panes[i:])


def next_window_end(panes: Sequence[Pane], closed_ms: int | None, hop_ms: int) -> int | None:
    """End of the next window to close: the first one after ``closed_ms`` holding a pane.

    Args:
        panes: aligned panes sorted by start; those of closed windows already dropped.
        closed_ms: end of the last window closed, or None.
        hop_ms: the hop (the size, for tumbling windows).

    Returns:
        The window end (exclusive), or None when no pane is held.
    """
    if not panes:
        return None
    end = panes[0].start_ms + hop_ms
    if closed_ms is not None and closed_ms + hop_ms > end:
        end = closed_ms + hop_ms
    return end


def window_panes(panes: Sequence[Pane], end_ms: int, size_ms: int) -> list[Pane]:
    """The panes of the window ``[end_ms - size_ms, end_ms)``."""
    low = end_ms - size_ms
    return [p for p in panes if low <= p.start_ms < end_ms]


def sliding_insert(
    cells: tuple[Pane, ...],
    ts_ms: int,
    value: float,
    watermark_ms: int,
    size_ms: int,
    sample_cap: int,
) -> tuple[Pane, ...]:
    """Sliding-window cells with one record added and those out of ``(wm - size, wm]`` gone.

    Args:
        cells: cells sorted by ``first_ms``.
        ts_ms, value: the record.
        watermark_ms: the window's end after this record (the latest event time seen).
        size_ms: window size.
        sample_cap: most sampled values per cell (0: no sample).

    Returns:
        At most :data:`MAX_SLIDING_CELLS` cells, sorted by ``first_ms``.
    """
    slot_ms = max(1, size_ms // SLIDING_SLOTS)
    cell = new_pane(pane_start(ts_ms, slot_ms), ts_ms, value, sample_cap)
    firsts = [c.first_ms for c in cells]
    i = bisect.bisect_right(firsts, ts_ms)
    edge = watermark_ms - size_ms
    kept = [c for c in (*cells[:i], cell, *cells[i:]) if c.last_ms > edge]
    if len(kept) > MAX_SLIDING_CELLS:
        merged: list[Pane] = []
        for c in kept:
            if merged and merged[-1].start_ms == c.start_ms:
                merged[-1] = merge_panes(merged[-1], c, sample_cap)
            else:
                merged.append(c)
        kept = merged
    return tuple(kept)


def percentile(panes: Sequence[Pane], p: float) -> float | None:
    """Nearest-rank ``p``-th percentile (0 < p < 100) of the panes' weighted samples."""
    pairs = sorted(
        (v, 1 << h) for pane in panes for h, level in enumerate(pane.sample) for v in level
    )
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for value, weight in pairs:
        seen += weight
        if seen >= rank:
            return value
    return pairs[-1][0]


def aggregate(panes: Sequence[Pane], how: AggregateName | float) -> float | None:
    """The aggregate of the records in ``panes``; a float ``how`` is a percentile.

    Never raises on finite values and never returns a non-finite number (see *Overflow* in
    the module docstring): ``inf`` from state written by older versions saturates, NaN gives
    no result.

    Returns:
        The result, or None for no panes, or ``rate`` over fewer than two timestamps.
    """
    result = _aggregate(panes, how)
    if result is None or math.isnan(result):
        return None
    return saturate(result)


def _aggregate(panes: Sequence[Pane], how: AggregateName | float) -> float | None:
    if not panes:
        return None
    if not isinstance(how, str):
        return percentile(panes, how)
    if how == "count":
        return float(sum(p.count for p in panes))
    if how == "sum":
        return saturating_sum(p.total for p in panes)
    if how == "avg":
        return _average(panes)
    if how == "min":
        return min(p.low for p in panes)
    if how == "max":
        return max(p.high for p in panes)
    last = panes[0]
    first = panes[0]
    for p in panes[1:]:
        if p.last_ms >= last.last_ms:
            last = p
        if p.first_ms < first.first_ms:
            first = p
    if how == "last":
        return last.last
    # rate: change per second between the earliest and the latest value
    span_ms = last.last_ms - first.first_ms
    if span_ms <= 0:
        return None
    return _rate(last.last, first.first, span_ms)


def _average(panes: Sequence[Pane]) -> float:
    """Mean of the records in ``panes``; divides before summing when the sum overflows."""
    count = sum(p.count for p in panes)
    total = saturating_sum(p.total for p in panes)
    if abs(total) < MAX_FLOAT:
        return total / count
    return saturate(saturating_sum(saturate(p.total) / count for p in panes))


def _rate(last: float, first: float, span_ms: int) -> float:
    """``(last - first)`` per second over ``span_ms``, saturated (the difference of two huge
    values of opposite sign overflows)."""
    change = saturate(last) - saturate(first)
    if math.isfinite(change):
        return saturate(change * 1000.0 / span_ms)
    half = saturate(last) / 2 - saturate(first) / 2  # halves cannot overflow
    return saturate(half / span_ms * 2000.0)


def value_key(value: float) -> int:
    """16-bit hash of a float's bits (``-0.0`` and ``0.0`` alike), for seen keys."""
    bits: int = struct.unpack("<Q", struct.pack("<d", value + 0.0))[0]
    mixed = (bits * 0x9E3779B97F4A7C15) & _MASK64
    mixed = ((mixed ^ (mixed >> 29)) * 0xBF58476D1CE4E5B9) & _MASK64
    return (mixed ^ (mixed >> 32)) & _VALUE_MASK


_VALUE_BITS: Final = 16
_VALUE_MASK: Final = (1 << _VALUE_BITS) - 1


def seen_has(seen: Sequence[int], watermark_ms: int, ts_ms: int, value: float) -> bool:
    """Whether a record with this event time and value is among the ``seen`` keys (kept
    relative to ``watermark_ms``)."""
    if ts_ms > watermark_ms:
        return False
    key = (watermark_ms - ts_ms) << _VALUE_BITS | value_key(value)
    i = bisect.bisect_left(seen, key)
    return i < len(seen) and seen[i] == key


def seen_add(
    seen: tuple[int, ...],
    watermark_ms: int,
    new_watermark_ms: int,
    ts_ms: int | None,
    value: float,
    keep_from_ms: int,
    cap: int = MAX_SEEN_KEYS,
) -> tuple[tuple[int, ...], int | None]:
    """Seen keys with the record's key added, moved to a new watermark, and pruned.

    A key is ``(watermark_ms - ts_ms) << 16 | value_key(value)``: small integers (compact in
    msgpack), sorted, so the newest records come first.

    Args:
        seen: sorted keys relative to ``watermark_ms``.
        watermark_ms: the watermark ``seen`` is relative to.
        new_watermark_ms: the watermark the result is relative to (not earlier).
        ts_ms, value: the record (``ts_ms`` None: only move and prune); not after
            ``new_watermark_ms``.
        keep_from_ms: earliest event time still accepted; older keys are of no use.
        cap: most keys kept.

    Returns:
        The keys, and None, or when more than ``cap`` would be kept, the event time from which
        keys are kept (the oldest are dropped: records before it must be treated as late).
    """
    shift = (new_watermark_ms - watermark_ms) << _VALUE_BITS
    limit = (new_watermark_ms - keep_from_ms + 1) << _VALUE_BITS  # keys at and after: too old
    if shift:
        kept = [key + shift for key in seen if key + shift < limit]
    else:
        kept = list(seen[: bisect.bisect_left(seen, limit)])
    if ts_ms is not None and ts_ms >= keep_from_ms:
        bisect.insort(kept, (new_watermark_ms - ts_ms) << _VALUE_BITS | value_key(value))
    elif not shift and len(kept) == len(seen):
        return seen, None
    if len(kept) <= cap:
        return tuple(kept), None
    # drop whole event times, so that every key of an event time still accepted is held
    oldest_kept = kept[cap - 1] >> _VALUE_BITS
    if kept[cap] >> _VALUE_BITS == oldest_kept:
        oldest_kept -= 1
    end = bisect.bisect_left(kept, (oldest_kept + 1) << _VALUE_BITS)
    return tuple(kept[:end]), new_watermark_ms - oldest_kept

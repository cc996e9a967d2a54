"""``/readyz``: is this worker doing its share?

A worker is ready when every check passes: its consumer groups are assigned and not
rebalancing, its state is recovered, each stage's group is caught up within a bound (lag from
Kafka, so the answer is the cluster's, not a guess), and its channels are loaded. Checks come
as a mapping ``name -> bool`` or ``name -> {"ok": bool, "detail": str}``; the JSON body of a
503 says which failed and why.

:func:`parts_readiness` turns the worker's own facts (``WorkerParts.readiness()``) into checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.ops.cluster import GroupStatus

__all__ = ["Check", "evaluate", "lag_checks", "parts_readiness", "worker_checks"]

Check = dict[str, Any]


def _check(value: object) -> Check:
    if isinstance(value, Mapping):
        return {"ok": bool(value.get("ok")), **{k: v for k, v in value.items() if k != "ok"}}
    return {"ok": bool(value)}


def evaluate(checks: Mapping[str, object]) -> tuple[bool, dict[str, Check]]:
    """``(ready, normalized checks)``; no checks at all is not ready (nothing ran yet)."""
    normalized = {name: _check(value) for name, value in checks.items()}
    return bool(normalized) and all(c["ok"] for c in normalized.values()), normalized


def lag_checks(groups: list[GroupStatus] | None, max_lag: int) -> dict[str, Check]:
    """``caught_up:<stage>`` per stage: total lag of its group at most ``max_lag`` records."""
    if groups is None:
        return {"caught_up": {"ok": False, "detail": "consumer lag not read from Kafka yet"}}
    out: dict[str, Check] = {}
    for group in groups:
        uncommitted = [
            f"{p.topic}:{p.partition}"
            for p in group.partitions
            if p.committed is None and p.end > 0
        ]
        detail = f"lag={group.lag} max={max_lag}"
        if uncommitted:
            detail += f" no commit yet on {','.join(uncommitted[:5])}"
        out[f"caught_up:{group.stage}"] = {
            "ok": group.lag <= max_lag,
            "detail": detail,
            "lag": group.lag,
        }
    return out


def parts_readiness(parts: Any) -> Callable[[], dict[str, object]]:
    """The readiness checks of a :class:`~pipeline.worker.WorkerParts`: its ``readiness()``
    facts (per stage: assigned, recovered, caught up) turned into ``/readyz`` checks."""
    return lambda: worker_checks(parts.readiness(), parts.channels)


def worker_checks(facts: Mapping[str, Any], channels: Mapping[str, Any]) -> dict[str, object]:
    """``/readyz`` checks from ``WorkerParts.readiness()``.

    Ready needs the normalize stage's assignment, recovered tables (no rebalance under way)
    and channels; how far each stage lags is the lag check's business (Kafka's committed
    offsets, :func:`lag_checks`), so the stages' own "caught up" is shown, not required.
    """
    normalize = facts.get("normalize") or {}
    evaluate = facts.get("evaluate") or {}
    notify = facts.get("notify") or {}
    partitions = list(evaluate.get("partitions") or [])
    caught_up = list(evaluate.get("caught_up") or [])
    return {
        "assigned": {
            "ok": bool(normalize.get("assigned")),
            "detail": (
                f"normalize assigned={bool(normalize.get('assigned'))}; evaluate partitions="
                f"{partitions}; notify active={bool(notify.get('active'))}"
            ),
        },
        "recovered": {
            "ok": bool(evaluate.get("recovered")),
            "detail": (
                f"tables recovered; caught up on partitions {caught_up}"
                if evaluate.get("recovered")
                else "table recovery not finished (or a rebalance is under way)"
            ),
        },
        "channels": {
            "ok": bool(channels),
            "detail": ",".join(sorted(channels)) or "no channel loaded",
        },
    }

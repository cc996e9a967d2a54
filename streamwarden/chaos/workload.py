"""The alerting workload of the worker scenarios: rules, channel, stream and oracle.

:class:`PowerStream` writes aliunid frames with known kW values; :func:`expected_transitions`
replays the very same envelopes through :func:`pipeline.replay.replay` (the oracle), so the
notifications due are known exactly. The channel template writes each alert of a notification
as ``SWCHAOS|kind|rule|entity|state|ts_ms|fingerprint;`` (see :data:`CHANNELS_YAML`), which
:mod:`streamwarden.chaos.notifications` parses back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pipeline.topics import partition_of
from producers.envelope import RawEnvelope, now_ms
from producers.sink import EnvelopeSink

__all__ = [
    "CHANNELS_YAML",
    "HOOK_URL_ENV",
    "PARTITIONS",
    "RULES_YAML",
    "RULE_THRESHOLD",
    "RULE_WINDOW",
    "WINDOW_GRACE_S",
    "AlertKey",
    "PowerStream",
    "balanced_points",
    "expected_transitions",
    "frame_key",
    "in_scope",
    "partition_of",
    "write_config",
]

HOOK_URL_ENV = "STREAMWARDEN_CHAOS_HOOK_URL"
PARTITIONS = 4

RULE_THRESHOLD = "chaos-power-high"
RULE_WINDOW = "chaos-power-avg"
WINDOW_GRACE_S = 20
"""Grace of the window rule: longer than any outage a scenario causes, so records that reach a
restarted or taking-over worker late still count (see :mod:`pipeline.rules.runtime`)."""

RULES_YAML = f"""\
rules:
  - name: {RULE_THRESHOLD}
    type: threshold
    match: {{source: aliunid, metric: sys.kW}}
    condition: {{op: ">", value: 40}}
    clear: {{condition: {{op: "<", value: 35}}}}
    severity: warning
    summary: "{{{{ entity }}}} draws {{{{ value }}}} kW"
    channels: [hook]
  - name: {RULE_WINDOW}
    type: aggregate
    match: {{source: aliunid, metric: sys.kW}}
    window: {{kind: tumbling, size: 2s}}
    aggregate: avg
    condition: {{op: ">", value: 40}}
    clear: {{condition: {{op: "<", value: 35}}}}
    grace: {WINDOW_GRACE_S}s
    severity: warning
    channels: [hook]
"""
"""A threshold rule (alert state) and a tumbling-window rule (window state) on the stream."""

CHANNELS_YAML = f"""\
channels:
  hook:
    url_env: {HOOK_URL_ENV}
    format: text
    templates:
      body: "{{% for a in alerts %}}SWCHAOS|{{{{ kind }}}}|{{{{ a.rule }}}}|{{{{ a.entity }}}}|\
{{{{ a.state }}}}|{{{{ a.ts_ms }}}}|{{{{ a.fingerprint }}}};{{% endfor %}}"
defaults:
  group_by: [fingerprint]
  group_wait: 0s
  group_interval: 0s
  repeat_interval: 24h
"""
"""One group per alert, sent at once, never batched or repeated: one notification per
transition, so the oracle's transitions are exactly the notifications expected."""

AlertKey = tuple[str, str, str, int]
"""``(rule, entity, state, ts_ms)``: one alert transition, one expected notification."""


class PowerStream:
    """Deterministic aliunid ``data`` frames: known kW per measuring point and step.

    Points are spread evenly over the partitions (:func:`balanced_points`). Each point
    alternates between ``HIGH_KW`` (above 40) and ``LOW_KW`` (below 35) for
    ``half_cycle_steps`` steps each, shifted by a seeded phase per point, so both rules of
    :data:`RULES_YAML` fire and resolve over and over. ``received_at_ms`` is the time of
    writing, strictly increasing, so event times are unique and the replay order is exact.

    Every envelope written is kept in :attr:`envelopes` (the oracle's input).
    """

    HIGH_KW = 50.0
    LOW_KW = 10.0
    STREAM = "chaos-aliunid"

    def __init__(
        self, seed: int, *, points_per_partition: int = 2, half_cycle_steps: int = 30
    ) -> None:
        import random

        rng = random.Random(seed)
        self.points = balanced_points(rng, points_per_partition, PARTITIONS)
        self.half_cycle_steps = half_cycle_steps
        self.phases = [rng.randrange(2 * half_cycle_steps) for _ in self.points]
        self.envelopes: list[RawEnvelope] = []
        self.step = 0
        self._last_ms = 0

    def kw(self, point: int, step: int) -> float:
        position = (step + self.phases[point]) % (2 * self.half_cycle_steps)
        return self.HIGH_KW if position < self.half_cycle_steps else self.LOW_KW

    def next_envelopes(self) -> list[RawEnvelope]:
        """The frames of the next step, one per point, stamped now."""
        out = []
        for index, point in enumerate(self.points):
            self._last_ms = max(now_ms(), self._last_ms + 1)
            frame = {
                "type": "data",
                "id": point,
                "data": {"sys": {"kW": self.kw(index, self.step)}},
            }
            out.append(
                RawEnvelope(
                    source="aliunid",
                    stream=self.STREAM,
                    received_at_ms=self._last_ms,
                    payload=orjson.dumps(frame).decode(),
                    meta={"connection": 1},
                )
            )
        self.step += 1
        return out

    async def run(self, sink: EnvelopeSink, stop: asyncio.Event, step_s: float) -> None:
        """Write one step every ``step_s`` seconds until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            for envelope in self.next_envelopes():
                await sink.send(frame_key(envelope), envelope)
                self.envelopes.append(envelope)
            next_at += step_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - loop.time())):
                    await stop.wait()


def balanced_points(rng: Any, per_partition: int, partitions: int) -> list[str]:
    """Seeded measuring point ids, exactly ``per_partition`` keyed to each partition, so every
    worker of a group owns some of the stream (and a killed one leaves state behind)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    while any(len(ids) < per_partition for ids in chosen.values()):
        point = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids = chosen[partition_of(point.encode(), partitions)]
        if len(ids) < per_partition:
            ids.append(point)
    return [point for p in range(partitions) for point in chosen[p]]


def frame_key(envelope: RawEnvelope) -> bytes:
    """The Kafka key the aliunid producer gives a frame: its measuring point id."""
    return str(orjson.loads(envelope.payload)["id"]).encode()


def expected_transitions(envelopes: Iterable[RawEnvelope], rules_path: Path) -> list[AlertKey]:
    """The oracle: the alert transitions a replay of ``envelopes`` gives, as alert keys."""
    from pipeline.replay import replay
    from pipeline.rules.engine import RuleEngine
    from pipeline.rules.loader import load_rules

    result = replay(envelopes, RuleEngine(load_rules([rules_path])))
    return [(t.rule, t.entity, t.state, t.ts_ms) for t in result.transitions]


def write_config(folder: Path) -> tuple[Path, Path]:
    """Write ``rules.yaml`` and ``channels.yaml`` into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    channels = folder / "channels.yaml"
    channels.write_text(CHANNELS_YAML, encoding="utf-8")
    return rules, channels


def in_scope(rule: str, ts_ms: int, last_ms: int) -> bool:
    """Whether the oracle can know a transition of ``rule`` at ``ts_ms`` when the stream
    ended at ``last_ms``: the replay's clock stops there, so a window result is only known
    once its grace has passed by then (the live worker gives later ones later)."""
    if rule == RULE_WINDOW:
        return ts_ms <= last_ms - WINDOW_GRACE_S * 1000
    return ts_ms <= last_ms

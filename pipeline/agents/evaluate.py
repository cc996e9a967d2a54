"""Agent ``evaluate_rules``: measurements -> alert transitions, alert state in a changelog table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from pipeline.agents.deadletter import dead_letter
from pipeline.agents.state import BatchedTableState
from pipeline.models import decode_measurement, encode_record
from pipeline.rules.engine import AlertState, RuleEngine

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(AlertState)


def encode_state(state: AlertState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(raw: bytes) -> AlertState:
    return _state_decoder.decode(raw)


def make_evaluate_rules(
    engine_ref: Callable[[], RuleEngine],
    table: Any,
    alerts: Any,
    deadletter: Any,
    *,
    batch_max: int,
    batch_within: float,
    counters: dict[str, int],
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function.

    ``engine_ref`` returns the current engine, so a rules reload takes effect at the next batch.
    """

    async def evaluate_rules(stream: Any) -> None:
        async for events in stream.take_events(batch_max, within=batch_within):
            engine = engine_ref()
            state: BatchedTableState[AlertState] = BatchedTableState(
                table, encode_state, decode_state
            )
            for event in events:
                try:
                    measurement = decode_measurement(event.value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter, event, stage="evaluate", reason=f"not a measurement: {exc}"
                    )
                    continue
                state.partition = event.message.partition
                for transition in engine.evaluate(state, measurement):
                    counters["transitions"] += 1
                    await alerts.send(
                        key=transition.fingerprint.encode(), value=encode_record(transition)
                    )
                counters["evaluated"] += 1
            state.flush()

    return evaluate_rules

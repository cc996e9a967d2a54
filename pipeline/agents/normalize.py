"""Agent ``normalize_raw``: raw envelopes -> canonical measurements, bad frames -> dead letters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from pipeline.agents.crash import batches_or_exit
from pipeline.agents.deadletter import dead_letter
from pipeline.agents.progress import ConsumeProgress
from pipeline.agents.publish import Publisher
from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, encode_records
from pipeline.normalize import normalize_envelope
from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC
from producers.envelope import decode_envelope

logger = logging.getLogger(__name__)


def _by_topic_and_entity(
    records: Sequence[CanonicalRecord],
) -> dict[tuple[str, str], list[CanonicalRecord]]:
    """Records grouped by output topic and entity (Kafka key), in their order."""
    groups: dict[tuple[str, str], list[CanonicalRecord]] = {}
    for record in records:
        topic = MEASUREMENTS_TOPIC if isinstance(record, Measurement) else STATES_TOPIC
        groups.setdefault((topic, record.entity), []).append(record)
    return groups


def make_normalize_raw(
    producer: Callable[[], Any],
    *,
    batch_max: int,
    batch_within: float,
    counters: dict[str, int],
    progress: ConsumeProgress | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function; ``producer`` returns faust's transport producer.

    Measurements go to ``measurements``, state events to ``states``, both keyed by entity so
    one entity's records stay in order on one partition number of each; one Kafka record per
    raw message, topic and entity holds that entity's records as an array.
    """

    async def normalize_raw(stream: Any) -> None:
        publisher = Publisher(producer())
        deadletter = publisher

        async def handle(events: Any) -> None:
            for event in events:
                try:
                    envelope = decode_envelope(event.value)
                    records = normalize_envelope(envelope)
                except BadInputError as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(deadletter, event, stage="normalize", reason=exc.reason)
                    continue
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter, event, stage="normalize", reason=f"not a raw envelope: {exc}"
                    )
                    continue
                except Exception as exc:
                    # A normalizer bug must not lose the frame nor stop the worker.
                    logger.exception("normalizer failed unexpectedly topic=%s", event.message.topic)
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter,
                        event,
                        stage="normalize",
                        reason=f"unexpected {type(exc).__name__} in normalizer",
                    )
                    continue
                for (topic, entity), group in _by_topic_and_entity(records).items():
                    await publisher.send(topic, entity.encode(), encode_records(group))
                counters["measurements"] += len(records)
                counters["raw"] += 1
            await publisher.confirm()

        await batches_or_exit(
            "normalize_raw",
            stream.take_events(batch_max, within=batch_within),
            handle,
            progress,
        )

    return normalize_raw

"""Sending records the pipeline cannot process to ``deadletter.v1``, with the reason."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.agents.publish import Publisher
from pipeline.models import DeadLetter, encode_record
from pipeline.topics import DEADLETTER_TOPIC
from producers.envelope import now_ms

logger = logging.getLogger(__name__)


async def dead_letter(publisher: Publisher, event: Any, *, stage: str, reason: str) -> None:
    """Publish a faust ``event``'s original bytes plus ``reason`` and where it came from."""
    message = event.message
    await dead_letter_record(
        publisher,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=event.value,
        stage=stage,
        reason=reason,
    )


async def dead_letter_record(
    publisher: Publisher,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: Any,
    stage: str,
    reason: str,
) -> None:
    """Publish a record's original bytes plus ``reason`` and where it came from.

    ``reason`` must be secret-free: it is stored and shown to operators.
    """
    text = (
        value.decode("utf-8", errors="replace")
        if isinstance(value, bytes | bytearray)
        else str(value)
    )
    record = DeadLetter(
        stage=stage,
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
        raw=text,
        failed_at_ms=now_ms(),
    )
    await publisher.send(DEADLETTER_TOPIC, key, encode_record(record))
    logger.warning(
        "dead-lettered stage=%s topic=%s partition=%d offset=%d reason=%s",
        stage,
        topic,
        partition,
        offset,
        reason,
    )

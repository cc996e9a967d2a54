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
    await dead_letter_record(publisher, event.message, stage=stage, reason=reason)


async def dead_letter_record(
    publisher: Publisher, message: Any, *, stage: str, reason: str
) -> None:
    """Publish a consumed record's original bytes plus ``reason`` and where it came from.

    ``message`` is a faust ``Message`` or an aiokafka ``ConsumerRecord``: both carry
    ``topic``, ``partition``, ``offset``, ``key`` and the raw ``value``. ``reason`` must be
    secret-free: it is stored and shown to operators.
    """
    value = message.value
    is_bytes = isinstance(value, bytes | bytearray)
    text = value.decode("utf-8", errors="replace") if is_bytes else str(value)
    record = DeadLetter(
        stage=stage,
        reason=reason,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        raw=text,
        failed_at_ms=now_ms(),
    )
    await publisher.send(DEADLETTER_TOPIC, message.key, encode_record(record))
    logger.warning(
        "dead-lettered stage=%s topic=%s partition=%d offset=%d reason=%s",
        stage,
        message.topic,
        message.partition,
        message.offset,
        reason,
    )

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
    """Publish ``event``'s original bytes plus ``reason`` and where it came from.

    ``reason`` must be secret-free: it is stored and shown to operators.
    """
    message = event.message
    raw = event.value
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
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

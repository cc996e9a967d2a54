"""Publishing from the stages, confirmed per batch.

``Topic.send`` builds a FutureMessage, a PendingMessage and callbacks for every record; at the
volumes of ``measurements.v1`` that machinery costs more than the work itself. Stages instead
hand records straight to a producer (faust's transport producer in the agents, an aiokafka
producer behind :class:`KafkaSender` in the normalize stage) and, at the
end of each batch, wait until Kafka acknowledged every one: a failed send raises before the
batch's offsets can be committed, so nothing is acked that was not written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.errors import StreamWardenError


class PublishError(StreamWardenError):
    """Kafka refused records of this batch; the batch must not be acknowledged."""


class KafkaSender:
    """aiokafka's producer behind the ``send(topic, key, value, partition, ts, headers)`` call
    :class:`Publisher` makes (faust's transport producer's signature)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Any,
    ) -> Any:
        return await self._producer.send(topic, value=value, key=key, partition=partition)


class Publisher:
    """Send records now, confirm them all at :meth:`confirm`.

    Args:
        producer: faust's transport producer (``app.producer``) or a :class:`KafkaSender`.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._pending: list[Awaitable[Any]] = []
        self.sent = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, *, partition: int | None = None
    ) -> None:
        """Hand one record to the producer; ``partition`` None: by key; ``value`` None: a
        tombstone (a deleted key on a compacted changelog)."""
        self._pending.append(await self._producer.send(topic, key, value, partition, None, None))
        self.sent += 1

    async def confirm(self) -> None:
        """Wait for Kafka's acknowledgement of everything sent since the last call.

        Raises:
            PublishError: any record was not written (the cause is chained).
        """
        await self.take_pending()

    def take_pending(self) -> Awaitable[None]:
        """What :meth:`confirm` waits for, detached: everything sent until now, and nothing
        sent after. For a caller that goes on sending the next batch meanwhile."""
        pending, self._pending = self._pending, []
        return _confirmed(pending)


async def _confirmed(pending: list[Awaitable[Any]]) -> None:
    if not pending:
        return
    results = await asyncio.gather(*pending, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise PublishError(
            f"{len(failed)} of {len(results)} records were not written to Kafka"
        ) from failed[0]

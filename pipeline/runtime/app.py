"""The faust app and transport that use :mod:`pipeline.runtime`'s subclasses, and the settings.

faust picks its transport class from the broker URL's scheme (``App._new_transport`` and
``App._new_producer_transport``, ``faust/app/base.py``: ``transport.by_url(...)``); there is no
setting for a transport class, so :class:`StreamWardenApp` overrides those two factory methods
to build :class:`Transport`, faust's aiokafka transport whose ``Consumer`` and ``Producer`` are
:class:`~pipeline.runtime.consumer.BatchDrainConsumer` and
:class:`~pipeline.runtime.producer.BatchingProducer`. Everything else is faust's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.runtime.consumer import DEFAULT_FETCH_MAX_WAIT_MS, BatchDrainConsumer
from pipeline.runtime.producer import BatchingProducer

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_FETCH_BYTES",
    "MAX_POLL_RECORDS",
    "STREAM_BUFFER_MAXSIZE",
    "StreamWardenApp",
    "Transport",
    "runtime_options",
]

MAX_BATCH_BYTES = 256 * 1024
"""Largest produce batch (faust's producer and the normalize stage's)."""
MAX_FETCH_BYTES = 4 * 1024 * 1024
"""Largest fetch per partition (faust's consumer and the normalize stage's)."""
MAX_POLL_RECORDS = 1000
"""Records per fetch (``broker_max_poll_records``); canonical messages carry up to 500 records
each, so this is plenty."""
STREAM_BUFFER_MAXSIZE = 16 * MAX_POLL_RECORDS
"""Events an agent's stream may buffer (``stream_buffer_maxsize``). Far above a fetch: with
faust's default (4096) close to the fetch size, the drain waited on a full queue at every
fetch (issue 18's "settings" row)."""
PRODUCER_LINGER_S = 0.005
"""faust's producer waits this long to fill a batch (0: one request per send)."""


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the consumer and producer of :mod:`pipeline.runtime`."""

    Consumer: ClassVar[type[Any]] = BatchDrainConsumer
    Producer: ClassVar[type[Any]] = BatchingProducer


class StreamWardenApp(faust.App):
    """``faust.App`` on :class:`Transport`.

    Attributes:
        fetch_max_wait_ms: the worker consumer's fetch wait (see
            :class:`~pipeline.runtime.consumer.FetchWaitConsumerThread`).
        before_seek: awaited with faust's consumer and its assignment before the consumer
            seeks to the committed offsets after an assignment (see
            :meth:`~pipeline.runtime.consumer.BatchDrainConsumer.perform_seek`).
    """

    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    before_seek: Callable[[Any, set[Any]], Awaitable[Any]] | None = None

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Transport:
        return Transport(self.conf.broker_producer, self)


def runtime_options(*, linger_s: float = PRODUCER_LINGER_S) -> dict[str, Any]:
    """The faust settings the runtime's figures were measured with (issue 18)."""
    return {
        "broker_max_poll_records": MAX_POLL_RECORDS,
        "stream_buffer_maxsize": STREAM_BUFFER_MAXSIZE,
        "consumer_max_fetch_size": MAX_FETCH_BYTES,
        "producer_max_batch_size": MAX_BATCH_BYTES,
        "producer_linger": linger_s,
        # Recovery is the store's plain read (pipeline.runtime.tables): no delay before it.
        "stream_recovery_delay": 0.0,
    }

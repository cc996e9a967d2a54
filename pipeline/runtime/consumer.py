"""faust's aiokafka consumer: one task pair per fetch instead of four tasks per message.

faust 0.15.3 hands every fetched message to the conductor inside
``Consumer._drain_messages`` (``faust/transport/consumer.py``) as
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's ``wait_first``
creates four tasks per message (the callback, the suspend wait, ``_stopped`` and ``_crashed``)
and an ``asyncio.wait`` over them. Measured (issue 18): p99 at 2,000 msg/s fell from 71x to
13x that of a plain aiokafka loop without it.

:class:`BatchDrainConsumer` delivers a whole fetch in *one* ``wait_first`` race against
``suspend_flow`` instead. Why that is safe: what the race is for is unchanged. When a
rebalance suspends the flow, delivery stops at the message being delivered (its callback is
cancelled, as faust cancels the one message's callback), the read offset stays at the last
message delivered, and the rest of the fetch is dropped; the partitions are sought to their
committed offsets after the rebalance, so those records are fetched again (faust's own
behaviour for what it drops). A delivered message still carries the generation id of its
fetch, and faust's stream skips messages of an older generation, as before.

:class:`FetchWaitConsumerThread` gives the worker consumer a fetch wait of our choosing:
faust hard-codes ``fetch_max_wait_ms=1500`` in ``AIOKafkaConsumerThread._create_worker_consumer``
(``faust/transport/drivers/aiokafka.py``). librdkafka's mock cluster (the embedded broker) often
holds a fetch for the whole wait even when data arrives; with 1.5 s a hop took p50 630 ms,
with 20 ms 34 ms. The value is set on the aiokafka consumer before it starts (it is read when
``AIOKafkaConsumer.start`` builds its fetcher), so nothing else about the consumer changes.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiokafka
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

__all__ = [
    "DEFAULT_FETCH_MAX_WAIT_MS",
    "YIELD_EVERY",
    "BatchDrainConsumer",
    "FetchWaitConsumerThread",
]

CONSUMER_FETCHING = faust_consumer.CONSUMER_FETCHING
"""The diagnostic flag faust's drain sets while it fetches (kept for its livelock detector)."""
YIELD_EVERY = 100
"""Messages delivered between two yields to the event loop (faust's ``yield_every``)."""
DEFAULT_FETCH_MAX_WAIT_MS = 1500
"""faust's hard-coded fetch wait, used when the app names none."""


class FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread; its worker consumer waits at most the app's
    ``fetch_max_wait_ms`` per fetch (see the module docstring)."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer: aiokafka.AIOKafkaConsumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        consumer._fetch_max_wait_ms = wait_ms  # read by the Fetcher made in start()
        return consumer


class BatchDrainConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, draining each fetch in one race against ``suspend_flow``.

    Replaces ``faust.transport.consumer.Consumer._drain_messages`` (0.15.3, lines 1170-1249):
    the same loop (fetch, gap tracking, commit every ``broker_commit_every`` acks, read
    offsets), with the per-message ``wait_first`` replaced by one per fetch; see the module
    docstring for why that is safe.
    """

    def _new_consumer_thread(self) -> FetchWaitConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets (after every assignment's recovery), after
        the app's ``before_seek`` hook, if it has one, had the chance to commit first offsets
        (an upgrade: :mod:`pipeline.agents.upgrade`)."""
        before_seek = getattr(self.app, "before_seek", None)
        if before_seek is not None:
            await before_seek(self, self.assignment())
        await super().perform_seek()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - via the worker
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                fetched: list[tuple[TP, Any]] = [pair async for pair in getmany(timeout=1.0)]
                # faust sleeps here too: getmany may return at once, in a loop.
                await self.sleep(0)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if fetched and not self.should_stop and not self.suspend_flow.is_set():
                    await self.wait_first(self._deliver(fetched), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, fetched: list[tuple[TP, Any]]) -> None:
        """Hand ``fetched`` to the conductor in order, as faust's loop body does per message:
        gaps noted, each message delivered once, its read offset set after delivery."""
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        for tp, message in fetched:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                await callback(message)
                read_offset[tp] = offset

"""State of the partitions a stage owns, in memory, every write also on a changelog topic.

Why not a faust table: the evaluate stage runs as a plain aiokafka consumer group (faust's
per-message consumer path made the rule hop the slowest of the pipeline, see
:mod:`pipeline.agents.evaluate`), and faust recovers a table only for partitions *faust's*
group assigned. This is the part of a faust table the stage needs, and no more: a dict of raw
keys and values like faust's ``memory://`` store, writes queued per batch and sent to the
changelog (one Kafka record per written key, a tombstone per deleted key), and recovery of a
partition by reading its changelog partition from the beginning to its end offset when the
stage is assigned it. Topic name, keys and values are those the faust table wrote
(``<app_id>-alert_state-changelog``, ``p<partition>|<key>``), so state written by earlier
versions is recovered as it is.

The changelog partition of a key is the partition of the input it belongs to, given with
every write (:class:`~pipeline.agents.state.PartitionState` does), never the key's hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.agents.publish import Publisher
from pipeline.agents.state import partition_prefix

__all__ = ["ChangelogTable"]

logger = logging.getLogger(__name__)

RECOVERY_POLL_MS = 500
"""Longest wait of one fetch while reading a changelog to its end."""


class ChangelogTable:
    """Raw ``key -> value`` state of the owned partitions, backed by a changelog topic.

    The interface :class:`~pipeline.agents.state.PartitionState` uses of a faust table is
    :attr:`data` and :meth:`send_changelog`; writes are only queued there, and go to Kafka at
    :meth:`publish`, so a stage decides when in its batch they leave (after the batch's outputs
    are acknowledged: see :mod:`pipeline.agents.evaluate`).

    Args:
        topic: the changelog topic (compacted on real Kafka), with as many partitions as the
            input topics.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.data: dict[bytes, bytes] = {}
        self._queued: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue a write (``value`` None: the key was deleted) to changelog ``partition``."""
        self._queued.append((partition, key, value))

    @property
    def queued(self) -> int:
        """Writes waiting for :meth:`publish`."""
        return len(self._queued)

    async def publish(self, publisher: Publisher) -> None:
        """Hand every queued write to ``publisher`` (its ``confirm`` waits for them), in
        record batches per partition, each partition's writes in the order they were made."""
        queued, self._queued = self._queued, []
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in queued:
            by_partition.setdefault(partition, []).append((key, value))
        for partition, records in by_partition.items():
            await publisher.send_many(self.topic, partition, records)

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget the local state of ``partitions`` (revoked); returns how many keys went.

        A scan of the store: for rebalances, not per batch.
        """
        prefixes = tuple(partition_prefix(p).encode() for p in partitions)
        if not prefixes:
            return 0
        gone = [key for key in self.data if key.startswith(prefixes)]
        for key in gone:
            del self.data[key]
        return len(gone)

    async def recover(self, consumer: AIOKafkaConsumer, partitions: Iterable[int]) -> int:
        """Replace the local state of ``partitions`` by their changelog, read to its end.

        Args:
            consumer: a started consumer of no group, used for nothing else meanwhile.
            partitions: the partitions to recover.

        Returns:
            Keys held for those partitions afterwards.
        """
        wanted = sorted(set(partitions))
        if not wanted:
            return 0
        started = time.monotonic()
        self.drop(wanted)
        tps = [TopicPartition(self.topic, p) for p in wanted]
        consumer.assign(tps)
        ends: dict[Any, int] = await consumer.end_offsets(tps)
        starts: dict[Any, int] = await consumer.beginning_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        data = self.data
        read = 0
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=RECOVERY_POLL_MS)
            for records in batches.values():
                for record in records:
                    read += 1
                    if record.value is None:
                        data.pop(record.key, None)
                    else:
                        data[record.key] = record.value
            for tp in list(pending):
                # Position, not the last offset read: compaction leaves gaps at the end.
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        consumer.unsubscribe()
        prefixes = tuple(partition_prefix(p).encode() for p in wanted)
        held = sum(1 for key in data if key.startswith(prefixes))
        logger.info(
            "state recovered topic=%s partitions=%s records=%d keys=%d in %.2fs",
            self.topic,
            ",".join(map(str, wanted)),
            read,
            held,
            time.monotonic() - started,
        )
        return held

"""Upgrade from the versions whose evaluate stage had its own consumer group.

From 2026-12-02 until issue 18 the evaluate stage was a plain aiokafka consumer group,
``<app_id>-evaluate``, and committed the canonical topics' offsets there; it is a faust agent of
the group ``<app_id>`` again now. A canonical partition ``<app_id>`` never committed (or last
committed long before) must not be evaluated from the beginning of what Kafka retains: that
would notify old alerts once more (the notify stage keeps delivered marks for a day only). So,
before faust positions the streams after an assignment, each canonical partition ``<app_id>``
has no offset for is given the ``<app_id>-evaluate`` offset, if there is one, as its first
commit (:func:`adopt_legacy_offsets`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC

__all__ = ["LegacyOffsets", "legacy_evaluate_group"]

logger = logging.getLogger(__name__)


def legacy_evaluate_group(app_id: str) -> str:
    """The consumer group the evaluate stage committed in until issue 18."""
    return f"{app_id}-evaluate"


class LegacyOffsets:
    """Adopts ``<app_id>-evaluate`` offsets for canonical partitions ``<app_id>`` never committed.

    Args:
        app_id: the faust app id (its consumer group).
        bootstrap: Kafka bootstrap servers.
    """

    def __init__(self, app_id: str, bootstrap: str) -> None:
        self._app_id = app_id
        self._bootstrap = bootstrap
        self._settled: set[TopicPartition] = set()
        """Partitions that have a commit in ``<app_id>``: never looked up again."""

    async def adopt(self, consumer: Any, assignment: Iterable[Any]) -> dict[TopicPartition, int]:
        """Commit, through faust's ``consumer``, the legacy offset of every assigned canonical
        partition that has none in ``<app_id>``; returns what was committed."""
        canonical = [
            TopicPartition(tp.topic, tp.partition)
            for tp in assignment
            if tp.topic in (MEASUREMENTS_TOPIC, STATES_TOPIC)
        ]
        unknown = [tp for tp in canonical if tp not in self._settled]
        if not unknown:
            return {}
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            ours = await admin.list_consumer_group_offsets(self._app_id, partitions=unknown)
            never = [tp for tp in unknown if tp not in ours or ours[tp].offset < 0]
            self._settled.update(tp for tp in unknown if tp not in never)
            legacy = {}
            if never:
                legacy = await admin.list_consumer_group_offsets(
                    legacy_evaluate_group(self._app_id), partitions=never
                )
        finally:
            await admin.close()
        adopted = {tp: meta.offset for tp, meta in legacy.items() if meta.offset >= 0}
        if adopted:
            await consumer._commit(adopted)
            self._settled.update(adopted)
            logger.info(
                "canonical partitions resume where the evaluate group %s left partitions=%d",
                legacy_evaluate_group(self._app_id),
                len(adopted),
            )
        return adopted

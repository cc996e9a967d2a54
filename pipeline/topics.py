"""Topic and table names: persisted API.

Changelog topics are named ``<app_id>-<table>-changelog`` by faust, so renaming the app id or a
table silently starts from empty state. Every topic has the same partition count so that tables
stay co-partitioned with the streams that write them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from producers.envelope import raw_topic

UPSTREAM_KINDS: tuple[str, ...] = ("aliunid", "nobil", "element", "valtronics", "hemis")
"""Upstream families the worker consumes. Each has a ``raw.<kind>.v1`` topic."""

MEASUREMENTS_TOPIC = "measurements.v1"
STATES_TOPIC = "states.v1"
ALERTS_TOPIC = "alerts.v1"
DEADLETTER_TOPIC = "deadletter.v1"
NOTIFICATIONS_TOPIC = "notifications.v1"
"""Retained history of notification outcomes (:mod:`pipeline.ops.history`); one partition."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in aiokafka and Java) gives
    ``key``: where an entity's canonical records and rule state live."""
    return _key_hash(key) % partitions


@functools.lru_cache(maxsize=200_000)
def _key_hash(key: bytes) -> int:
    """murmur2 of recent keys, remembered: aiokafka's is pure Python and was 8% of the
    worker's CPU."""
    return int(murmur2(key) & 0x7FFFFFFF)


ALERT_STATE_TABLE = "alert_state"
"""Table: ``p<partition>|<rule state key>`` -> encoded rule state, written by ``evaluate_rules``."""

NOTIFY_STATE_TABLE = "notify_state"
"""Table: dispatcher state (groups, alert index, inhibitions, rate windows); one partition."""

NOTIFY_LOG_TABLE = "notify_log"
"""Table: outbox ``o:<id>`` and delivered marks ``d:<id>``; one partition."""

ALERTS_PARTITIONS = 1
"""``alerts.v1`` and the notification tables have one partition: grouping, inhibition and rate
limits need every alert in one place, and alerts are few."""

TABLES: dict[str, str] = {
    ALERT_STATE_TABLE: MEASUREMENTS_TOPIC,
    NOTIFY_STATE_TABLE: ALERTS_TOPIC,
    NOTIFY_LOG_TABLE: ALERTS_TOPIC,
}
"""Each table and the topic it is co-partitioned with."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the worker needs, with how it must be created."""

    name: str
    partitions: int
    compacted: bool = False


def raw_topics() -> list[str]:
    """Names of the raw topics of every upstream family."""
    return [raw_topic(kind) for kind in UPSTREAM_KINDS]


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic faust uses for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"


def all_topics(app_id: str, partitions: int) -> list[TopicSpec]:
    """Every topic the producers and the worker use, changelogs included.

    The embedded broker cannot create topics on request, so this list is what it creates up
    front; on real Kafka, faust declares the same topics itself.
    """

    def count(topic: str) -> int:
        return ALERTS_PARTITIONS if topic in (ALERTS_TOPIC, NOTIFICATIONS_TOPIC) else partitions

    names = [*raw_topics(), MEASUREMENTS_TOPIC, STATES_TOPIC, ALERTS_TOPIC, DEADLETTER_TOPIC]
    names.append(NOTIFICATIONS_TOPIC)
    specs = [TopicSpec(name, count(name)) for name in names]
    specs += [
        TopicSpec(changelog_topic(app_id, table), count(source), compacted=True)
        for table, source in TABLES.items()
    ]
    return specs

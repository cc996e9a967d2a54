"""Topic and table names: persisted API.

Changelog topics are named ``<app_id>-<table>-changelog`` by faust, so renaming the app id or a
table silently starts from empty state. Every topic has the same partition count so that tables
stay co-partitioned with the streams that write them.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.envelope import raw_topic

UPSTREAM_KINDS: tuple[str, ...] = ("aliunid", "nobil", "element", "valtronics", "hemis")
"""Upstream families the worker consumes. Each has a ``raw.<kind>.v1`` topic."""

MEASUREMENTS_TOPIC = "measurements.v1"
STATES_TOPIC = "states.v1"
ALERTS_TOPIC = "alerts.v1"
DEADLETTER_TOPIC = "deadletter.v1"

ALERT_STATE_TABLE = "alert_state"
"""Table: alert fingerprint -> encoded AlertState, written by ``evaluate_rules``."""

TABLES: tuple[str, ...] = (ALERT_STATE_TABLE,)


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
    names = [*raw_topics(), MEASUREMENTS_TOPIC, STATES_TOPIC, ALERTS_TOPIC, DEADLETTER_TOPIC]
    specs = [TopicSpec(name, partitions) for name in names]
    specs += [TopicSpec(changelog_topic(app_id, t), partitions, compacted=True) for t in TABLES]
    return specs

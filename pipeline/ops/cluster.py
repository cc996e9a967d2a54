"""What Kafka says, the same for every worker and for the CLI.

:class:`ClusterView` reads three topics from the beginning (a consumer without a group, so
it changes nobody's offsets) and keeps the latest of each key:

- the ``alert_state`` changelog: rule engine state of every partition, whichever worker owns
  it (``p<partition>|<fingerprint>`` -> engine state; a tombstone deletes);
- ``alerts.v1``: the last transition of each fingerprint (severity and annotations);
- ``notifications.v1``: the notification history;
- ``deadletter.v1``: dead letters counted by stage and reason (the reason's words before the
  first colon, so frame details do not make a series each).

It also counts every transition on ``alerts.v1`` by rule and state. Both counts cover what
the topics retain, and they are the same in every worker.

:func:`group_status` reads consumer groups' committed offsets against the topics' end offsets
(lag per partition) and, where the broker answers DescribeGroups, which member owns what.
A worker refreshes its view every few seconds; ``streamwarden alerts`` reads once to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from pipeline.agents.clients import stage_consumer
from pipeline.agents.normalize import normalize_group
from pipeline.models import AlertTransition, decode_alert
from pipeline.ops.history import NOTIFICATIONS_TOPIC, NotificationRecord, decode_record
from pipeline.rules.state import (
    AlertState,
    EngineState,
    Phase,
    StateFormatError,
    Subject,
    decode_state,
)
from pipeline.settings import PipelineSettings
from pipeline.topics import (
    ALERT_STATE_TABLE,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    MEASUREMENTS_TOPIC,
    STATES_TOPIC,
    all_topics,
    changelog_topic,
    raw_topics,
)

__all__ = [
    "ClusterView",
    "GroupStatus",
    "LagProbe",
    "PartitionLag",
    "group_status",
    "stage_groups",
]

logger = logging.getLogger(__name__)


class _DeadLetterHead(msgspec.Struct):
    """The fields every dead letter has (the pipeline's and the producers')."""

    stage: str
    reason: str


_dead_letter_decoder = msgspec.json.Decoder(_DeadLetterHead)

HISTORY_KEPT = 5_000
"""Notification history records a view keeps (the newest)."""


class ClusterView:
    """The latest alert state, transitions and notification history, read from Kafka.

    Args:
        settings: bootstrap and app id (the changelog's name derives from it).
        follow_state: read the alert state changelog (every rule state write of the cluster:
            the CLI does, once). Without it, :meth:`entries` are the firing alerts of
            ``alerts.v1`` (cluster-wide, cheap: transitions are few) overlaid with
            ``local_entries`` (exact state, pending alerts included, of the partitions this
            worker owns), so a worker does not decode the whole cluster's state writes.
        local_entries: this worker's own rule state entries.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        history_kept: int = HISTORY_KEPT,
        follow_state: bool = True,
        local_entries: Callable[[], Iterable[tuple[str, EngineState]]] | None = None,
    ) -> None:
        self._settings = settings
        self.follow_state = follow_state
        self._local_entries = local_entries
        self.state_topic = changelog_topic(settings.app_id, ALERT_STATE_TABLE)
        self.state: dict[str, EngineState] = {}
        self.transitions: dict[str, AlertTransition] = {}
        self.history: list[NotificationRecord] = []
        self.transition_counts: Counter[tuple[str, str]] = Counter()
        """Transitions on ``alerts.v1`` by (rule, state)."""
        self.dead_letter_counts: Counter[tuple[str, str]] = Counter()
        """Records on ``deadletter.v1`` by (stage, reason kind)."""
        self._history_kept = history_kept
        self._consumer: AIOKafkaConsumer | None = None
        self.refreshed_at: float | None = None
        """``time.time()`` of the last complete refresh."""
        self.undecodable = 0

    async def start(self) -> None:
        """Connect and assign every partition of the three topics (absent topics skipped)."""
        consumer = stage_consumer(self._settings, None)
        await consumer.start()
        try:
            tps = await _partitions(
                consumer,
                self._settings,
                [
                    *([self.state_topic] if self.follow_state else []),
                    ALERTS_TOPIC,
                    NOTIFICATIONS_TOPIC,
                    DEADLETTER_TOPIC,
                ],
            )
            consumer.assign(tps)
            if tps:
                await consumer.seek_to_beginning(*tps)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Disconnect (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> ClusterView:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def refresh(self, read_timeout: float = 30.0) -> None:
        """Read every assigned partition up to its end offset as of this call.

        Raises:
            TimeoutError: the end was not reached within ``read_timeout`` seconds.
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ClusterView.refresh before start")
        tps = list(consumer.assignment())
        if not tps:
            self.refreshed_at = time.time()
            return
        async with asyncio.timeout(read_timeout):
            ends = await consumer.end_offsets(tps)
            while await self._behind(consumer, ends):
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, messages in batches.items():
                    for message in messages:
                        self._apply(tp.topic, message.key, message.value)
        if len(self.history) > self._history_kept:
            del self.history[: len(self.history) - self._history_kept]
        self.refreshed_at = time.time()

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return True
        return False

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        try:
            if topic == self.state_topic:
                if key is None:
                    return
                fingerprint = key.decode().split("|", 1)[-1]
                if value is None:
                    self.state.pop(fingerprint, None)
                else:
                    self.state[fingerprint] = decode_state(value)
            elif topic == ALERTS_TOPIC and value is not None:
                alert = decode_alert(value)
                self.transitions[alert.fingerprint] = alert
                self.transition_counts[(alert.rule, alert.state)] += 1
            elif topic == NOTIFICATIONS_TOPIC and value is not None:
                self.history.append(decode_record(value))
            elif topic == DEADLETTER_TOPIC and value is not None:
                head = _dead_letter_decoder.decode(value)
                kind = head.reason.split(":", 1)[0].strip()[:60]
                self.dead_letter_counts[(head.stage, kind)] += 1
        except (StateFormatError, msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
            self.undecodable += 1

    def entries(self) -> Iterable[tuple[str, EngineState]]:
        """``(fingerprint, state)`` of the alert state entries (see ``follow_state``)."""
        if self.follow_state:
            return self.state.items()
        merged: dict[str, EngineState] = {
            fingerprint: _firing_entry(alert)
            for fingerprint, alert in self.transitions.items()
            if alert.state == "firing"
        }
        if self._local_entries is not None:
            merged.update(self._local_entries())
        return merged.items()


def _firing_entry(alert: AlertTransition) -> AlertState:
    """A firing alert's entry as its last transition describes it."""
    subject = Subject(alert.entity, alert.source, alert.stream, alert.metric, "", alert.labels)
    return AlertState(alert.rule, 0, subject, Phase("firing", alert.ts_ms, alert.value))


async def _partitions(
    consumer: AIOKafkaConsumer, settings: PipelineSettings, topics: Sequence[str]
) -> list[TopicPartition]:
    """The partitions of ``topics`` that exist, with the counts every StreamWarden topic is
    created with (:func:`~pipeline.topics.all_topics`)."""
    existing = await consumer.topics()
    counts = {
        spec.name: spec.partitions for spec in all_topics(settings.app_id, settings.partitions)
    }
    return [
        TopicPartition(topic, p)
        for topic in topics
        if topic in existing
        for p in range(counts.get(topic, settings.partitions))
    ]


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group's input: end offset, committed offset, lag (None: no commit)."""

    topic: str
    partition: int
    end: int
    committed: int | None
    lag: int | None
    owner: str = ""


@dataclass(frozen=True)
class GroupStatus:
    """A stage's consumer group: members (when the broker says) and lag per partition."""

    stage: str
    group: str
    members: list[dict[str, Any]] | None = None
    """None: the broker does not answer DescribeGroups (the embedded one does not)."""
    partitions: list[PartitionLag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``/api/status`` and ``streamwarden status --json``."""
        return {
            "stage": self.stage,
            "group": self.group,
            "lag": self.lag,
            "members": self.members,
            "partitions": [dataclasses.asdict(p) for p in self.partitions],
        }

    @property
    def lag(self) -> int:
        """Total lag; a partition without a commit counts its whole end offset."""
        return sum(p.lag if p.lag is not None else p.end for p in self.partitions)


def stage_groups(app_id: str) -> list[tuple[str, str, list[str]]]:
    """``(stage, group id, input topics)`` of every consuming stage: normalize has a plain
    aiokafka group of its own, evaluate and notify are faust agents of the app's group."""
    return [
        ("normalize", normalize_group(app_id), raw_topics()),
        ("evaluate", app_id, [MEASUREMENTS_TOPIC, STATES_TOPIC]),
        ("notify", app_id, [ALERTS_TOPIC]),
    ]


class LagProbe:
    """Reads the stage groups' committed offsets and lag, over clients kept open between
    reads (the worker probes every few seconds)."""

    def __init__(self, settings: PipelineSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def read(self, read_timeout: float = 15.0) -> list[GroupStatus]:
        """Every stage's group status; connects on first use.

        Raises:
            TimeoutError: Kafka did not answer within ``read_timeout`` seconds (the clients
                are dropped and made again on the next read).
        """
        try:
            async with asyncio.timeout(read_timeout):
                if self._consumer is None or self._admin is None:
                    await self.close()
                    consumer = stage_consumer(self._settings, None)
                    admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap)
                    try:
                        await consumer.start()
                        await admin.start()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await admin.close()
                        await consumer.stop()
                        raise
                    self._consumer, self._admin = consumer, admin
                return [
                    await _one_group(
                        self._consumer, self._admin, self._settings, stage, group, topics
                    )
                    for stage, group, topics in stage_groups(self._settings.app_id)
                ]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        consumer, admin = self._consumer, self._admin
        self._consumer = self._admin = None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def group_status(settings: PipelineSettings, read_timeout: float = 15.0) -> list[GroupStatus]:
    """Committed offsets and lag of every stage's group (see the module docstring)."""
    probe = LagProbe(settings)
    try:
        return await probe.read(read_timeout)
    finally:
        await probe.close()


async def _one_group(
    consumer: AIOKafkaConsumer,
    admin: AIOKafkaAdminClient,
    settings: PipelineSettings,
    stage: str,
    group: str,
    topics: Sequence[str],
) -> GroupStatus:
    tps = await _partitions(consumer, settings, topics)
    ends = await consumer.end_offsets(tps) if tps else {}
    committed: dict[TopicPartition, Any] = {}
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps or None)
    except Exception as exc:  # a broker without the group answers with an error code
        logger.debug("no committed offsets group=%s error=%s", group, exc)
    members, owners = await _members(admin, group)
    partitions = []
    for tp in tps:
        meta = committed.get(tp)
        offset = int(meta.offset) if meta is not None and meta.offset >= 0 else None
        end = int(ends.get(tp, 0))
        partitions.append(
            PartitionLag(
                tp.topic,
                tp.partition,
                end,
                offset,
                None if offset is None else max(end - offset, 0),
                owners.get((tp.topic, tp.partition), ""),
            )
        )
    return GroupStatus(stage, group, members, partitions)


async def _members(
    admin: AIOKafkaAdminClient, group: str
) -> tuple[list[dict[str, Any]] | None, dict[tuple[str, int], str]]:
    """Members of ``group`` with their partitions; None if the broker does not answer
    DescribeGroups."""
    try:
        responses = await admin.describe_consumer_groups([group])
    except Exception as exc:
        logger.debug("describe groups failed group=%s error=%s", group, exc)
        return None, {}
    members: list[dict[str, Any]] = []
    owners: dict[tuple[str, int], str] = {}
    for response in responses:
        for described in response.groups:
            error, _gid, _state, _ptype, _proto, group_members = described[:6]
            if error:
                continue
            for member in group_members:
                member_id, client_id, host = member[0], member[1], member[2]
                raw = member[-1]
                assigned: list[str] = []
                with contextlib.suppress(Exception):
                    decoded = ConsumerProtocolMemberAssignment.decode(raw)
                    for topic, parts in decoded.assignment:
                        for p in parts:
                            owners[(topic, p)] = client_id
                            assigned.append(f"{topic}:{p}")
                members.append(
                    {"member": member_id, "client": client_id, "host": host, "partitions": assigned}
                )
    return members, owners

"""Broker fixtures: the embedded broker over real TCP, or real Kafka when configured.

Each test gets unique topic names (``unique_topics``) so tests never see each other's data,
even though one embedded broker serves the whole session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping

import pytest

from streamwarden.embedded_broker import EmbeddedBroker


class BrokerHandle:
    """What tests need from a broker: its address and a way to create topics."""

    def __init__(self, bootstrap: str, embedded: EmbeddedBroker | None) -> None:
        self.bootstrap = bootstrap
        self.embedded = embedded

    @property
    def is_embedded(self) -> bool:
        return self.embedded is not None

    def create_topics(self, topics: Mapping[str, int]) -> None:
        if self.embedded is not None:
            self.embedded.create_topics(topics)
            return
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, partitions) for name, partitions in topics.items()]
        )
        for future in futures.values():
            try:
                future.result(30)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[BrokerHandle]:
    """The session's broker: real Kafka if STREAMWARDEN_KAFKA_BOOTSTRAP is set, else embedded."""
    real = os.environ.get("STREAMWARDEN_KAFKA_BOOTSTRAP")
    if real:
        yield BrokerHandle(real, None)
        return
    with EmbeddedBroker() as broker:
        yield BrokerHandle(broker.bootstrap, broker)


@pytest.fixture
def unique_suffix() -> str:
    """A suffix that makes topic, group and app names unique to one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def fresh_broker() -> Iterator[BrokerHandle]:
    """A broker no other test has written to (a new embedded one, ~0.1 s to start).

    Against real Kafka (STREAMWARDEN_KAFKA_BOOTSTRAP set) topics are shared; tests then tell
    their own records apart by a unique stream name.
    """
    real = os.environ.get("STREAMWARDEN_KAFKA_BOOTSTRAP")
    if real:
        yield BrokerHandle(real, None)
        return
    with EmbeddedBroker() as broker:
        yield BrokerHandle(broker.bootstrap, broker)

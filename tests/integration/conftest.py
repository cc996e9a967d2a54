"""Broker fixtures: the embedded broker over real TCP, or a shared broker when configured.

Set ``STREAMWARDEN_KAFKA_BOOTSTRAP`` to run the integration tests against a broker that other
tests (and other test runs) share: real Kafka, or the embedded broker started on its own with
``streamwarden broker`` (export everything it prints: ``STREAMWARDEN_KAFKA_EMBEDDED=true`` says
the broker cannot create topics through Kafka's API, and ``STREAMWARDEN_EMBEDDED_BROKER_CONTROL``
is the port through which it creates them instead).

Tests must therefore never depend on a broker of their own: each uses group and app names
with :func:`unique_suffix` in them, and tells its records apart by a unique stream (or rule)
name, because the product's topic names are fixed (``raw.<kind>.v1``, ``measurements.v1``,
``alerts.v1``...: persisted API). Fixed topics may already exist on a shared broker with
another partition count: :meth:`BrokerHandle.partitions` gives the one to use.

``private_broker`` is always an embedded broker of the test's own, also when one is shared,
for four kinds of test only: one that takes the broker down (an outage must not hit the tests
sharing it); one that runs a single pipeline stage from the start of a fixed topic and counts
what it saw (a stage reads every record there, other tests' included); the ops tests, whose
worker reports cluster-wide views (lag, alerts.v1, notifications.v1) of the fixed topics; and
the live-equals-replay test, whose worker would lag behind the shared backlog (its docstring
says how that changes absence alerts).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping

import pytest

from pipeline.topics import MEASUREMENTS_TOPIC
from streamwarden.broker_control import CONTROL_ENV
from streamwarden.broker_control import create_topics as control_create_topics
from streamwarden.embedded_broker import EmbeddedBroker

SHARED_BOOTSTRAP_ENV = "STREAMWARDEN_KAFKA_BOOTSTRAP"
SHARED_EMBEDDED_ENV = "STREAMWARDEN_KAFKA_EMBEDDED"
CREATE_TIMEOUT = 30.0


class BrokerHandle:
    """What tests need from a broker: its address and a way to create topics.

    Attributes:
        bootstrap: ``host:port`` for clients.
        embedded: the broker when this test session started it (it can then be taken down).
        is_embedded: the broker is StreamWarden's embedded one (started here or by
            ``streamwarden broker``): workers must not declare topics (``KAFKA_EMBEDDED``).
    """

    def __init__(
        self,
        bootstrap: str,
        embedded: EmbeddedBroker | None,
        *,
        shared_embedded: bool = False,
        control: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.embedded = embedded
        self.is_embedded = embedded is not None or shared_embedded
        self._control = control

    def partitions(self, default: int) -> int:
        """The partition count to run the worker with: ``default`` on a broker of this
        session's own; on a shared broker, that of ``measurements.v1`` if it exists (every
        topic of one worker must have the same count)."""
        if self.embedded is not None:
            return default
        from confluent_kafka.admin import AdminClient

        topics = (
            AdminClient({"bootstrap.servers": self.bootstrap})
            .list_topics(timeout=CREATE_TIMEOUT)
            .topics
        )
        existing = topics.get(MEASUREMENTS_TOPIC)
        return len(existing.partitions) if existing is not None else default

    def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create topics (name -> partitions).

        On a shared broker, topics that exist are kept as they are: the product's fixed topic
        names (``raw.aliunid.v1``...) may already be there with another partition count, and
        tests that use them tell their records apart by stream name.
        """
        if self.embedded is not None:
            self.embedded.create_topics(topics)
            return
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        existing = admin.list_topics(timeout=CREATE_TIMEOUT).topics
        missing = {name: n for name, n in topics.items() if name not in existing}
        if not missing:
            return
        if self._control:
            control_create_topics(self._control, missing, timeout=CREATE_TIMEOUT)
            return
        if self.is_embedded:
            raise RuntimeError(
                f"{SHARED_EMBEDDED_ENV}=true but {CONTROL_ENV} is not set: the embedded broker "
                "cannot create topics through Kafka's API; export the variables `streamwarden "
                "broker` prints"
            )
        futures = admin.create_topics(
            [NewTopic(name, n) for name, n in missing.items()], operation_timeout=CREATE_TIMEOUT
        )
        for name, future in futures.items():
            try:
                future.result(CREATE_TIMEOUT)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RuntimeError(f"cannot create topic {name!r}: {exc}") from exc


def _shared() -> BrokerHandle | None:
    bootstrap = os.environ.get(SHARED_BOOTSTRAP_ENV)
    if not bootstrap:
        return None
    shared_embedded = os.environ.get(SHARED_EMBEDDED_ENV, "").lower() in ("1", "true", "yes")
    return BrokerHandle(
        bootstrap,
        None,
        shared_embedded=shared_embedded,
        control=os.environ.get(CONTROL_ENV) or None,
    )


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[BrokerHandle]:
    """The session's broker: the shared one if STREAMWARDEN_KAFKA_BOOTSTRAP is set, else an
    embedded one for the whole session."""
    shared = _shared()
    if shared is not None:
        yield shared
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

    With a shared broker (STREAMWARDEN_KAFKA_BOOTSTRAP set) that one is returned: tests then
    use unique topic and app names, or tell their own records apart by a unique stream name.
    """
    shared = _shared()
    if shared is not None:
        yield shared
        return
    with EmbeddedBroker() as broker:
        yield BrokerHandle(broker.bootstrap, broker)


@pytest.fixture
def private_broker() -> Iterator[BrokerHandle]:
    """Always an embedded broker of this test's own, also when one is shared (see the module
    docstring for the kinds of test that need it)."""
    with EmbeddedBroker() as broker:
        yield BrokerHandle(broker.bootstrap, broker)

"""Start-up checks: Kafka answers before the worker or a producer starts, and the worker's
partition count matches the topics that exist.

Without it, a worker pointed at a wrong or unreachable bootstrap printed ~50 lines of faust
traceback and exited 1 at once; a producer buffered silently. Here, one line per attempt names
the bootstrap and what failed (as librdkafka saw it), the attempts back off with jitter
(:class:`producers.backoff.Backoff`) for a configurable time, and then
:class:`KafkaUnreachableError` carries the last reason; the CLI prints it and exits 2.

It lives in ``streamwarden`` (the command line) rather than ``pipeline`` or ``producers`` so the
worker and the producers share it without producers importing pipeline.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from producers.backoff import Backoff

__all__ = [
    "KafkaUnreachableError",
    "PartitionMismatch",
    "partition_mismatches",
    "probe_kafka",
    "wait_for_kafka",
]

# librdkafka logs every failed connect on its own (to stderr by default); the reason reaches us
# through error_cb instead. A logger outside the logging tree: nothing reaches any handler.
_SILENT = logging.Logger(f"{__name__}.librdkafka", level=logging.CRITICAL + 1)

_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_SUFFIX = re.compile(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$")


class KafkaUnreachableError(Exception):
    """Kafka did not answer a metadata request within the start-up allowance.

    Attributes:
        bootstrap: the address tried (never carries credentials in StreamWarden).
        reason: the last failure, in librdkafka's words without its log decorations.
        waited_s: seconds spent trying.
        attempts: metadata requests made.
    """

    def __init__(self, bootstrap: str, reason: str, waited_s: float, attempts: int) -> None:
        super().__init__(bootstrap, reason, waited_s, attempts)
        self.bootstrap = bootstrap
        self.reason = reason
        self.waited_s = waited_s
        self.attempts = attempts

    def __str__(self) -> str:
        return (
            f"cannot reach Kafka at {self.bootstrap}: {self.reason}; gave up after "
            f"{self.waited_s:.0f}s and {self.attempts} attempt{'s' if self.attempts != 1 else ''} "
            "(STREAMWARDEN_KAFKA_BOOTSTRAP, --connect-timeout)"
        )


def _clean(text: str) -> str:
    return _SUFFIX.sub("", _PREFIX.sub("", text))


def probe_kafka(bootstrap: str, timeout: float) -> str | None:
    """Ask ``bootstrap`` for cluster metadata once.

    Returns:
        None if a broker answered, else why not (one line).
    """
    errors: list[KafkaError] = []
    config: dict[str, Any] = {  # logger and error_cb are objects; the stubs say scalars
        "bootstrap.servers": bootstrap,
        "logger": _SILENT,
        "error_cb": errors.append,
        "reconnect.backoff.max.ms": 1000,
    }
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb: the connect or resolve failure behind the timeout
        causes = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        if causes:
            return _clean(causes[-1].str())
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._TRANSPORT:
            return (
                f"no Kafka answer within {timeout:g}s (the address accepts connections but "
                "does not speak Kafka, or answers too slowly)"
            )
        return _clean(str(error or exc))
    if not metadata.brokers:
        return "the cluster's metadata lists no brokers"
    return None


def wait_for_kafka(
    bootstrap: str,
    timeout: float,
    *,
    say: Callable[[str], None],
    probe: Callable[[str, float], str | None] = probe_kafka,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Probe until Kafka answers or ``timeout`` seconds have passed.

    Args:
        bootstrap: ``host:port[,host:port]``.
        timeout: seconds to keep trying (0: one attempt).
        say: receives one line per failed attempt that will be retried.
        probe: one attempt (see :func:`probe_kafka`); replaceable for tests of the schedule.
        backoff: delays between attempts; default 0.5 s growing to 10 s, with jitter.
        clock, sleep: time source and wait (tests pass fakes).

    Raises:
        KafkaUnreachableError: the last attempt failed and no time is left.
    """
    backoff = backoff or Backoff(initial=0.5, factor=2.0, maximum=10.0)
    started = clock()
    attempts = 0
    while True:
        remaining = timeout - (clock() - started)
        attempts += 1
        # Half the time left (1-5 s) per attempt, so a short allowance still retries.
        reason = probe(bootstrap, max(1.0, min(5.0, remaining / 2)))
        if reason is None:
            if attempts > 1:
                say(f"Kafka at {bootstrap} answered after {attempts} attempts")
            return
        remaining = timeout - (clock() - started)
        if remaining <= 0:
            raise KafkaUnreachableError(bootstrap, reason, clock() - started, attempts)
        delay = min(backoff.next_delay(), remaining)
        say(
            f"cannot reach Kafka at {bootstrap}: {reason}; retrying in {delay:.1f}s "
            f"({remaining:.0f}s left)"
        )
        sleep(delay)


class PartitionMismatch(NamedTuple):
    """A topic that exists with another partition count than the worker expects."""

    topic: str
    actual: int
    expected: int

    def __str__(self) -> str:
        return (
            f"topic {self.topic} has {self.actual} partitions, this worker expects {self.expected}"
        )


def partition_mismatches(
    bootstrap: str, expected: Mapping[str, int], timeout: float = 10.0
) -> list[PartitionMismatch]:
    """Topics that exist with another partition count than ``expected`` (name -> count);
    topics that do not exist yet are not a mismatch (they get created).

    A worker whose ``STREAMWARDEN_PARTITIONS`` differs from its topics' counts used to start,
    take partitions whose rule state it never loaded, and crash in its evaluate agent; tables
    are co-partitioned with their streams, so the counts must be equal.

    Raises:
        KafkaUnreachableError: the metadata request failed.
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _SILENT}
    try:
        metadata = AdminClient(config).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnreachableError(bootstrap, _clean(str(exc)), timeout, 1) from None
    found = []
    for name, count in sorted(expected.items()):
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) != count:
            found.append(PartitionMismatch(name, len(topic.partitions), count))
    return found

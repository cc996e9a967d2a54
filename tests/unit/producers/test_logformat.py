"""STREAMWARDEN_LOG_FORMAT and the routine-rebalance filter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from producers.logformat import LogFormatError, RoutineRebalanceFilter, apply_log_format


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """A root handler of our own for the duration of a test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield stream
    finally:
        root.handlers = saved


def test_json_format_gives_one_object_per_record_for_every_logger(
    root_stream: io.StringIO,
) -> None:
    apply_log_format("json")
    logging.getLogger("pipeline.worker").warning("worker starting rules=%d", 3)
    logging.getLogger("faust.worker").warning("faust says\non two lines")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("aiokafka.conn").exception("broken")
    lines = root_stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["logger"] for r in records] == ["pipeline.worker", "faust.worker", "aiokafka.conn"]
    assert records[0]["message"] == "worker starting rules=3"
    assert records[0]["level"] == "WARNING"
    assert records[0]["ts"].endswith("+00:00")
    assert records[1]["message"] == "faust says\non two lines"
    assert "RuntimeError: boom" in records[2]["exc"]


def test_text_format(root_stream: io.StringIO) -> None:
    apply_log_format("text")
    logging.getLogger("mode.services").warning("hello")
    assert root_stream.getvalue().rstrip().endswith(" WARNING mode.services: hello")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(LogFormatError, match=r"'yaml' is not a log format; use one of text, json"):
        apply_log_format("yaml")


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_routine_rebalance_commit_failure_becomes_info() -> None:
    routine = _record(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "OffsetCommit failed for group %s due to group error (%s), will rejoin",
        "streamwarden",
        "[Error 27] RebalanceInProgressError: streamwarden",
    )
    assert RoutineRebalanceFilter().filter(routine)
    assert (routine.levelno, routine.levelname) == (logging.INFO, "INFO")


def test_other_errors_stay_errors() -> None:
    for record in (
        _record(
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            "OffsetCommit failed: %s",
            "UnknownTopicOrPartition",
        ),
        _record("pipeline.worker", logging.ERROR, "RebalanceInProgress OffsetCommit failed"),
    ):
        assert RoutineRebalanceFilter().filter(record)
        assert record.levelno == logging.ERROR

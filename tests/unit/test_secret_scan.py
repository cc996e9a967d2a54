"""The whole-suite secret scan (tests/conftest.py, tests/support/secrets.py) really scans."""

from __future__ import annotations

import ast
import logging
import os
import uuid
from pathlib import Path

import pytest

from producers.redact import SecretFilter
from tests.support.secrets import (
    BETWEEN_TESTS,
    EXEMPT_LOGGERS,
    SECRETS,
    SUITE_RECORDS,
    SuiteRecords,
    forms_of,
    register_secret,
)


def scanner() -> tuple[SuiteRecords, logging.Logger]:
    records = SuiteRecords()
    log = logging.getLogger(f"scan-test.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(records)
    return records, log


def test_a_secret_in_a_message_or_traceback_is_reported_with_the_test() -> None:
    records, log = scanner()
    records.current = "tests/x.py::test_leaky"
    log.debug("connecting url=wss://h/live?apiKey=%s", "sk%2Flive%2B1")  # percent-encoded
    try:
        raise ValueError("token t0k-en-42 refused")
    except ValueError:
        log.exception("failed")
    records.current = "tests/x.py::test_clean"
    log.info("nothing to see")
    secrets = ["sk/live+1", "t0k-en-42", "short"]
    lines = records.leaks(secrets)
    assert len(lines) == 2
    assert lines[0].startswith(
        "secret #0 (sk/..., 9 chars) logged by tests/x.py::test_leaky: DEBUG scan-test."
    )
    assert lines[0].endswith("connecting url=wss://h/live?apiKey=<SECRET>...")
    assert lines[1].startswith(
        "secret #1 (t0k..., 9 chars) logged by tests/x.py::test_leaky: ERROR scan-test."
    )
    assert "token <SECRET> refused" in lines[1]
    assert "t0k-en-42" not in lines[1]
    assert records.records_total == 3


def test_short_values_are_not_searched_and_clean_records_pass() -> None:
    records, log = scanner()
    log.warning("value=abc12 user=admin")
    assert records.leaks(["abc12", "admin"]) == []  # both shorter than six characters
    assert records.leaks(["never-logged-value"]) == []


def test_identical_records_are_kept_once_with_their_tests() -> None:
    records, log = scanner()
    for test in ("a", "b", "c", "d"):
        records.current = test
        log.error("same text")
    assert records.texts == {f"ERROR {log.name}: same text": ["a", "b", "c"]}
    assert records.records_total == 4


def test_percent_encoded_forms_are_searched() -> None:
    assert forms_of("a b/c") == {"a b/c", "a%20b%2Fc", "a+b%2Fc"}


def test_decoded_json_escaped_and_basic_auth_forms_are_searched() -> None:
    """Issue 16, defect 8: a percent-encoded token logged decoded, a password echoed in an
    ``Authorization: Basic`` header or inside JSON escaped, all count as leaks."""
    assert "AAH-enc" in forms_of("AAH%2Denc")
    assert 'pa\\"ss' in forms_of('pa"ss')
    assert "dXNlcjpwYTU1d29yZA==" in forms_of("user:pa55word")
    records, log = scanner()
    records.current = "tests/x.py::test_echo"
    log.debug("peer echoed Authorization: Basic dXNlcjpwYTU1d29yZA==")
    log.debug("tgram url https://api.telegram.org/bot123456:AAH-enc/sendMessage")
    log.debug('body {"password": "pa\\"ss-w0rd"}')
    lines = records.leaks(["user:pa55word", "123456:AAH%2Denc", 'pa"ss-w0rd'])
    assert len(lines) == 3, lines


def test_the_session_handler_sees_this_tests_records(request: pytest.FixtureRequest) -> None:
    """Attached to the root logger, at DEBUG unless STREAMWARDEN_TEST_LOG_LEVEL says otherwise."""
    configured = os.environ.get("STREAMWARDEN_TEST_LOG_LEVEL", "DEBUG").upper()
    level = logging.getLevelName(configured)
    assert logging.getLogger().getEffectiveLevel() == level
    assert SUITE_RECORDS in logging.getLogger().handlers
    marker = f"probe-{uuid.uuid4().hex}"
    logging.getLogger("streamwarden.scan.probe").log(level, "scan probe %s", marker)
    key = f"{configured} streamwarden.scan.probe: scan probe {marker}"
    assert SUITE_RECORDS.texts[key] == [request.node.nodeid]
    assert SUITE_RECORDS.current not in ("", BETWEEN_TESTS)


def test_registration_is_idempotent_and_returns_the_value() -> None:
    value = f"registered-{uuid.uuid4().hex}"
    assert register_secret(value) == value
    register_secret(value)
    assert SECRETS.count(value) == 1


def test_the_exempt_loggers_are_not_stored() -> None:
    records = SuiteRecords()
    for name in sorted(EXEMPT_LOGGERS):
        records.handle(logging.makeLogRecord({"name": name, "msg": "< GET /live?apiKey=sekret1"}))
    assert records.texts == {}
    assert records.exempt_total == len(EXEMPT_LOGGERS)


def test_producers_never_log_through_the_exempt_websockets_loggers() -> None:
    """Every websockets ``connect``/``serve`` call in producers (simulators aside) is given a
    logger, so the exemption above never hides producer output."""
    root = Path(__file__).parents[2] / "producers"
    calls = 0
    for path in sorted(root.rglob("*.py")):
        if "simulators" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("websockets")
            for alias in node.names
            if alias.name in ("connect", "serve")
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in imported
            ):
                calls += 1
                assert "logger" in {k.arg for k in node.keywords}, f"{path}:{node.lineno}"
    assert calls >= 1


def test_filters_on_the_handler_mask_its_copy_not_the_record_others_see() -> None:
    records = SuiteRecords()
    records.addFilter(SecretFilter(["hidden-value-1"]))
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "msg": "key=%s", "args": ("hidden-value-1",)}
    )
    records.handle(record)
    assert list(records.texts) == ["INFO x: key=***"]
    assert record.getMessage() == "key=hidden-value-1"  # untouched for the next handler

"""Suite-wide fixtures and policy.

``require_service(name, reason)`` skips a test when a local service is missing on a user's
machine, but fails it in CI (``STREAMWARDEN_REQUIRE_SERVICES=1``), so a skipped test is never
passed off as done there.

Secret scan: a handler on the root logger keeps every log record of the whole run (message,
exception and stack text; the root logger is set to DEBUG, so library debug output counts
too). Tests register the credentials they configure (:mod:`tests.support.secrets`, or the
``register_secret`` fixture); when the session ends, every record is searched for each
registered secret of at least six characters (also percent-encoded), and the run fails with
the names of the tests whose records carry one. Records of subprocesses (workers, demo) are
not in this process: the tests that start them check their log files themselves. The
websockets library's own loggers are exempt (see ``EXEMPT_LOGGERS``).
``STREAMWARDEN_TEST_LOG_LEVEL`` overrides the root level (default ``DEBUG``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from tests.support.secrets import BETWEEN_TESTS, MIN_LENGTH, SECRETS, SUITE_RECORDS
from tests.support.secrets import register_secret as _register_secret


def require_service(name: str, reason: str) -> None:
    """Skip (or fail under STREAMWARDEN_REQUIRE_SERVICES=1) because ``name`` is unavailable."""
    message = f"{name} is not available: {reason}"
    if os.environ.get("STREAMWARDEN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (STREAMWARDEN_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture
def register_secret() -> Callable[[str], str]:
    """``register_secret(value)``: no log record of the run may contain ``value``."""
    return _register_secret


# --- the secret scan ---------------------------------------------------------------------------


_records = SUITE_RECORDS
_root_level = logging.getLevelName(os.environ.get("STREAMWARDEN_TEST_LOG_LEVEL", "DEBUG").upper())
_report: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    if _records not in root.handlers:
        root.addHandler(_records)
    root.setLevel(_root_level)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Some code under test sets the root level (the chaos CLI's file logging); restore ours
    # before the test's fixtures run (caplog.set_level still works inside a test).
    logging.getLogger().setLevel(_root_level)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _records.current = nodeid


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _records.current = BETWEEN_TESTS


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _report[:] = _records.leaks(list(SECRETS))
    if _report:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    registered = sum(1 for s in SECRETS if len(s) >= MIN_LENGTH)
    if _report:
        terminalreporter.section("secrets found in log records", sep="=", red=True, bold=True)
        for line in _report:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"FAILED: {len(_report)} leak(s) of registered secrets in log records "
            "(records of this process; see tests/conftest.py)"
        )
    else:
        terminalreporter.write_line(
            f"secret scan: {registered} registered secrets, {_records.records_total} log "
            f"records ({len(_records.texts)} distinct; {_records.exempt_total} of the "
            "upstream side not searched), no leak"
        )

"""The worker's logging set-up: apprise's per-send lines kept out below DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipeline.notify.reasons import capture_debug, debug_demand
from pipeline.worker import quiet_library_info


@pytest.fixture
def apprise_logger() -> Iterator[logging.Logger]:
    """apprise's logger as a fresh process has it (no capture installed), restored after."""
    library = logging.getLogger("apprise")
    level, handlers, propagate = library.level, list(library.handlers), library.propagate
    library.handlers.clear()
    library.propagate = True
    yield library
    library.setLevel(level)
    library.handlers[:] = handlers
    library.propagate = propagate


def test_apprise_info_is_dropped_at_info_and_its_warnings_kept(
    apprise_logger: logging.Logger,
) -> None:
    apprise_logger.setLevel(logging.NOTSET)
    quiet_library_info(logging.INFO)
    assert not apprise_logger.isEnabledFor(logging.INFO)
    assert apprise_logger.isEnabledFor(logging.WARNING)


def test_at_debug_apprise_logs_as_configured(apprise_logger: logging.Logger) -> None:
    apprise_logger.setLevel(logging.NOTSET)
    root = logging.getLogger()
    root_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        quiet_library_info(logging.DEBUG)
        assert apprise_logger.isEnabledFor(logging.INFO)
    finally:
        root.setLevel(root_level)


def test_with_the_failure_capture_on_apprise_builds_debug_on_demand_and_passes_on_warnings(
    apprise_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    idle = debug_demand.idle_level
    try:
        capture_debug()
        quiet_library_info(logging.INFO)
        # apprise builds no INFO/DEBUG records while no send wants its DEBUG lines ...
        assert not apprise_logger.isEnabledFor(logging.INFO)
        with debug_demand.wanted():
            # ... and DEBUG reaches its per-call capture (the cause of a failure) when one does,
            assert apprise_logger.isEnabledFor(logging.DEBUG)
            with caplog.at_level(logging.DEBUG):
                apprise_logger.info("Notifying 1 service(s).")
                apprise_logger.warning("Failed to send JSON notification: error=503.")
        # but only its warnings reach the process's log.
        assert [r.getMessage() for r in caplog.records if r.name == "apprise"] == [
            "Failed to send JSON notification: error=503."
        ]
        assert not apprise_logger.isEnabledFor(logging.INFO)
    finally:
        debug_demand.idle_level = idle

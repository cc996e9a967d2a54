"""The worker's logging set-up: apprise's per-send lines kept out below DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipeline.worker import quiet_library_info


@pytest.fixture
def apprise_logger() -> Iterator[logging.Logger]:
    library = logging.getLogger("apprise")
    level = library.level
    yield library
    library.setLevel(level)


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

"""The worker's collector settings (pipeline.runtime.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pipeline.runtime.collector import OLDER_THRESHOLD, YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tune_collector_freezes_the_heap_and_spaces_passes_out() -> None:
    gc.unfreeze()

    tune_collector()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    assert gc.isenabled()

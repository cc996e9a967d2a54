"""Catching up: "follow the wall clock only once the input is processed to its end"."""

from __future__ import annotations

from pipeline.agents.progress import CatchUp


def test_catch_up_needs_two_checks_in_a_row_and_a_raw_backlog_holds_every_partition() -> None:
    processed = {0: True, 1: False}
    normalize = {"caught_up": True}
    catch_up = CatchUp(processed.__getitem__, upstream_caught_up=lambda: normalize["caught_up"])
    assert catch_up.check({0, 1}) == set()  # first positive answer: not yet
    assert catch_up.lagging == {0, 1}
    assert catch_up.check({0, 1}) == {0}
    assert catch_up.lagging == {1}
    normalize["caught_up"] = False  # the normalize stage has a raw backlog
    assert catch_up.check({0, 1}) == set()
    normalize["caught_up"] = True
    processed[1] = True
    assert catch_up.check({0, 1}) == set()
    assert catch_up.check({0, 1}) == {0, 1}


def test_a_partition_that_falls_behind_starts_over() -> None:
    processed = {0: True}
    catch_up = CatchUp(processed.__getitem__)
    catch_up.check({0})
    assert catch_up.check({0}) == {0}
    processed[0] = False
    assert catch_up.check({0}) == set()
    processed[0] = True
    assert catch_up.check({0}) == set()
    assert catch_up.check({0}) == {0}

"""``streamwarden chaos``: options, the registry, and how a scenario's failure becomes a row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamwarden.chaos import SCENARIO_NAMES
from streamwarden.chaos.harness import ChaosOptions, ScenarioResult
from streamwarden.chaos.runner import SCENARIOS, Scenario, run_scenario
from streamwarden.cli import main
from streamwarden.cli_chaos import COLUMNS, _table_line


def test_help_names_every_scenario_and_the_options() -> None:
    result = CliRunner().invoke(main, ["chaos", "--help"])
    assert result.exit_code == 0, result.output
    for word in ("--quick", "--json", "--scenario", *SCENARIO_NAMES):
        assert word in result.output


def test_an_unknown_scenario_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(main, ["chaos", "--scenario", "meteor-strike"])
    assert result.exit_code == 2
    assert "meteor-strike" in result.output


def test_the_registry_has_exactly_the_listed_scenarios_with_quick_bounds() -> None:
    assert tuple(SCENARIOS) == SCENARIO_NAMES
    for scenario in SCENARIOS.values():
        assert 0 < scenario.quick_bound_s <= scenario.bound_s <= 900


def test_table_lines_keep_their_columns() -> None:
    header = _table_line(COLUMNS, "result")
    row = _table_line(("worker-kill", "1552", "75", "75", "0", "0"), "ok")
    assert header.index("sent") + len("sent") == row.index("1552") + len("1552")
    assert header.split() == [*COLUMNS, "result"]
    assert row.split()[-1] == "ok"


def _options(tmp_path: Path, lines: list[str]) -> ChaosOptions:
    return ChaosOptions(quick=True, seed=1, workdir=tmp_path, progress=lines.append)


async def test_a_scenario_that_overruns_its_bound_becomes_a_failed_row(tmp_path: Path) -> None:
    stopped = asyncio.Event()

    async def hangs(_options: ChaosOptions) -> list[ScenarioResult]:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()  # its cleanup ran
        return []

    lines: list[str] = []
    rows = await run_scenario(Scenario("hangs", hangs, 0.2, 0.1), _options(tmp_path, lines))
    assert [(r.scenario, r.ok) for r in rows] == [("hangs", False)]
    assert "timed out after 0s" in rows[0].note
    assert stopped.is_set()
    assert lines and "hangs: timed out" in lines[-1]


async def test_a_crashing_scenario_becomes_a_failed_row(tmp_path: Path) -> None:
    async def crashes(_options: ChaosOptions) -> list[ScenarioResult]:
        raise RuntimeError("boom")

    rows = await run_scenario(Scenario("crashes", crashes, 5, 5), _options(tmp_path, []))
    assert not rows[0].ok
    assert rows[0].note == "crashed: RuntimeError('boom')"


async def test_rows_of_a_scenario_pass_through(tmp_path: Path) -> None:
    row = ScenarioResult("fine", sent=3, expected=2, delivered=2, ok=True)

    async def fine(_options: ChaosOptions) -> list[ScenarioResult]:
        return [row]

    assert await run_scenario(Scenario("fine", fine, 5, 5), _options(tmp_path, [])) == [row]


def test_json_rows_have_the_issue_keys_first() -> None:
    row = ScenarioResult("x", sent=1, expected=2, delivered=3, duplicated=4, lost=5, ok=True)
    data = row.as_json()
    assert list(data)[:6] == ["scenario", "sent", "expected", "delivered", "duplicated", "lost"]
    assert [data[k] for k in COLUMNS[1:]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_scenario_module_documents_its_pass_criterion(name: str) -> None:
    run = SCENARIOS[name].run
    module = __import__(run.__module__, fromlist=["__doc__"])
    assert "Pass" in (module.__doc__ or ""), name

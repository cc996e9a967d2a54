"""``streamwarden chaos``: run the fault-injection scenarios and print what was lost or doubled."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import click

from streamwarden.chaos import SCENARIO_NAMES

COLUMNS = ("scenario", "sent", "expected", "delivered", "duplicated", "lost")
_WIDTHS = (26, 8, 9, 10, 11, 7)


def _table_line(values: tuple[str, ...], result: str) -> str:
    cells = [values[0].ljust(_WIDTHS[0])]
    cells += [v.rjust(w) for v, w in zip(values[1:], _WIDTHS[1:], strict=True)]
    return "  ".join(cells) + "  " + result


@click.command()
@click.option("--quick", is_flag=True, help="The CI variant: 3 kills, 10 s outages (~3 min).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per row and line (scenario, sent, expected, delivered, "
    "duplicated, lost, plus ok, note, seconds and a details breakdown) instead of the table.",
)
@click.option(
    "--scenario",
    "names",
    multiple=True,
    type=click.Choice(SCENARIO_NAMES),
    help="Run only this scenario (repeatable). Default: all, in the order listed here.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seeds every random choice.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep config, logs and worker output here (default: a temporary folder, removed "
    "when every scenario passed).",
)
def chaos(
    quick: bool, as_json: bool, names: tuple[str, ...], seed: int, workdir: Path | None
) -> None:
    """Break the pipeline on purpose and count what was lost or duplicated.

    Scenarios (each starts its own embedded broker, simulators and workers on 127.0.0.1,
    stops by itself within a bound, and stops everything it started): worker-kill (the worker
    SIGKILLed at random points, restarted), worker-takeover (one of two workers killed, the
    other takes over), upstream-drop (upstreams drop the connection every 50 messages),
    broker-outage (Kafka down and up under producers), channel-outage (the notification
    channel answers 503 for a minute).

    Prints one row per scenario (and per upstream family): events sent, items expected,
    delivered, duplicated, lost, then what happened. Progress goes to standard error. Exits 1
    if any scenario failed its criterion.
    """
    from streamwarden.chaos.harness import ChaosOptions, ScenarioResult
    from streamwarden.chaos.runner import SCENARIOS, run_scenario

    keep = workdir is not None
    folder = (
        workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="streamwarden-chaos-"))
    )
    folder.mkdir(parents=True, exist_ok=True)
    _log_to(folder / "chaos.log")

    def progress(line: str) -> None:
        click.echo(f"chaos: {line}", err=True)

    options = ChaosOptions(quick=quick, seed=seed, workdir=folder, progress=progress)
    selected = [SCENARIOS[name] for name in SCENARIO_NAMES if not names or name in names]
    progress(f"{len(selected)} scenarios{' (quick)' if quick else ''}; logs in {folder}")
    if not as_json:
        click.echo(_table_line(COLUMNS, "result"))

    async def run_all() -> list[ScenarioResult]:
        rows: list[ScenarioResult] = []
        for scenario in selected:
            for row in await run_scenario(scenario, options):
                rows.append(row)
                if as_json:
                    click.echo(json.dumps(row.as_json()))
                else:
                    values = (
                        row.scenario,
                        *(str(getattr(row, c)) for c in COLUMNS[1:]),
                    )
                    click.echo(_table_line(values, "ok" if row.ok else "FAILED"))
                sys.stdout.flush()
        return rows

    rows = asyncio.run(run_all())
    if not as_json:
        click.echo("")
        for row in rows:
            click.echo(f"{row.scenario} ({row.seconds:.0f}s): {row.note}")
    failed = [row.scenario for row in rows if not row.ok]
    if failed:
        progress(f"FAILED: {', '.join(failed)}; logs kept in {folder}")
        sys.exit(1)
    progress(f"all {len(rows)} rows passed")
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)


def _log_to(path: Path) -> None:
    """Send this process's logs (producers, simulators, Kafka clients) to a file, not the
    terminal: standard output carries the table or the JSON lines."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

"""``streamwarden chaos --quick --json``: every scenario once, as CI runs it, then row by row.

The command runs as a subprocess (its workers, brokers and simulators are its children), once
for the module; each test reads its rows. Each scenario starts its own embedded broker (the
broker outage needs the mock's set_down), so this runs the same with or without
``STREAMWARDEN_KAFKA_BOOTSTRAP``.

Kill and takeover rows must show every due notification delivered, in order, nothing
unexpected. The one copy allowed is a re-send after a kill that interrupted a delivery (the
channel had it, the delivered mark was not yet durable): it carries the same id and a
``[possible duplicate]`` title; an unmarked copy fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamwarden.chaos import SCENARIO_NAMES
from streamwarden.families import FAMILIES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KEYS = ("scenario", "sent", "expected", "delivered", "duplicated", "lost")
QUICK_BUDGET_S = 600


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``streamwarden chaos --quick --json`` once; rows by scenario name."""
    workdir = tmp_path_factory.mktemp("chaos")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamwarden",
            "chaos",
            "--quick",
            "--json",
            "--workdir",
            str(workdir),
        ],
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=QUICK_BUDGET_S,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]
    return {
        "rows": {row["scenario"]: row for row in rows},
        "lines": lines,
        "returncode": proc.returncode,
        "stderr": proc.stderr,
        "workdir": workdir,
    }


def _row(chaos_run: dict[str, Any], name: str) -> dict[str, Any]:
    rows = chaos_run["rows"]
    assert name in rows, (sorted(rows), chaos_run["stderr"][-3000:])
    row: dict[str, Any] = rows[name]
    return row


def _assert_every_notification_once(row: dict[str, Any]) -> None:
    """0 lost, nothing unexpected, in order; a copy only as a marked re-send after a kill."""
    details = row["details"]
    assert row["lost"] == 0, row["note"]
    assert not details["unexpected_by_rule"], row["note"]
    assert details["out_of_order"] == 0, row["note"]
    assert row["delivered"] == row["expected"] > 0, row["note"]
    # A kill between the channel accepting and the durable delivered mark makes the next
    # worker send again: allowed only marked as a possible duplicate, and only after a kill.
    assert row["duplicated"] == details["marked_possible_duplicate"], row["note"]
    assert row["duplicated"] <= details["resent_after_kill"], row["note"]


def test_json_lines_carry_the_issue_keys_for_every_scenario(chaos_run: dict[str, Any]) -> None:
    assert chaos_run["lines"], chaos_run["stderr"][-3000:]
    for line in chaos_run["lines"]:
        row = json.loads(line)
        assert set(KEYS) <= set(row), line
        assert isinstance(row["scenario"], str)
        assert all(isinstance(row[k], int) and row[k] >= 0 for k in KEYS[1:]), line
        assert isinstance(row["ok"], bool)
    names = set(chaos_run["rows"])
    for scenario in SCENARIO_NAMES:
        assert any(n == scenario or n.startswith(f"{scenario}/") for n in names), scenario
    # Exit code 1 exactly when some row failed.
    failed = [n for n, r in chaos_run["rows"].items() if not r["ok"]]
    assert chaos_run["returncode"] == (1 if failed else 0), chaos_run["stderr"][-3000:]


def test_worker_sigkilled_and_restarted_delivers_every_notification_once(
    chaos_run: dict[str, Any],
) -> None:
    row = _row(chaos_run, "worker-kill")
    assert row["details"]["kills"] == 3
    assert row["details"]["stalled_restarts"] == 0, row["note"]
    assert row["sent"] > 1000 and row["expected"] > 20  # alerts fired and resolved
    _assert_every_notification_once(row)


def test_the_surviving_worker_takes_over_partitions_and_state(
    chaos_run: dict[str, Any],
) -> None:
    row = _row(chaos_run, "worker-takeover")
    details = row["details"]
    assert details["owned_after"] == [0, 1, 2, 3], row["note"]
    assert len(details["owned_before"]) < 4  # the victim owned the rest
    assert row["expected"] > 20
    _assert_every_notification_once(row)


def test_element_resumes_with_after_exactly_once_despite_drops(
    chaos_run: dict[str, Any],
) -> None:
    row = _row(chaos_run, "upstream-drop/element")
    assert row["details"]["drops"] >= 3, row["note"]
    assert row["expected"] > 100
    assert (row["lost"], row["duplicated"]) == (0, 0), row["note"]
    assert row["delivered"] == row["expected"]
    assert row["details"]["in_order"]
    assert row["ok"]


@pytest.mark.parametrize("kind", [k for k in FAMILIES if k != "element"])
def test_families_without_replay_reconnect_and_report_their_gap(
    chaos_run: dict[str, Any], kind: str
) -> None:
    row = _row(chaos_run, f"upstream-drop/{kind}")
    details = row["details"]
    assert details["drops"] >= 1, row["note"]
    assert row["duplicated"] == 0
    assert details["connections_out_of_order"] == 0
    # The reported gap is what the server says it sent minus what the producer got.
    assert row["sent"] == details["server_sent"]
    assert row["lost"] == details["server_sent"] - details["producer_received"]
    assert row["ok"], row["note"]


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_producers_ride_out_a_broker_outage_within_their_buffer(
    chaos_run: dict[str, Any], kind: str
) -> None:
    row = _row(chaos_run, f"broker-outage/{kind}")
    details = row["details"]
    assert details["buffer_peak"] == details["buffer_max"]  # backpressure engaged...
    assert details["longest_pause_s"] >= details["outage_s"] / 2  # ...during the outage
    assert details["dropped_by_producer"] == 0
    assert (row["lost"], row["duplicated"]) == (0, 0), row["note"]
    assert row["delivered"] == row["expected"] > 0
    assert row["ok"]


def test_notifications_wait_out_a_channel_outage_in_order(chaos_run: dict[str, Any]) -> None:
    row = _row(chaos_run, "channel-outage")
    assert row["details"]["refused"] > 0  # the channel really was down
    assert row["details"]["out_of_order"] == 0
    assert (row["lost"], row["duplicated"]) == (0, 0), row["note"]
    assert row["delivered"] == row["expected"] > 5
    assert row["ok"]


def test_no_process_outlives_the_run(chaos_run: dict[str, Any]) -> None:
    workdir: Path = chaos_run["workdir"]
    pids = [int(p) for p in (workdir / "pids.txt").read_text().split()]
    assert len(pids) >= 10  # brokers and workers of the five scenarios
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    assert alive == [], f"children of the chaos run still alive: {alive}"

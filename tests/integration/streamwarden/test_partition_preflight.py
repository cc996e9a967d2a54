"""A worker whose STREAMWARDEN_PARTITIONS differs from its topics' counts refuses to start.

It used to start, take partitions whose rule state it never loaded and crash in its evaluate
agent ("event of partition N, whose state is not loaded"). On a broker of its own, the test
creates the topics with 4 partitions and starts the real worker command with 8.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.topics import MEASUREMENTS_TOPIC, all_topics
from streamwarden.preflight import PartitionMismatch, partition_mismatches
from tests.integration.conftest import BrokerHandle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_mismatches_are_found_and_missing_topics_are_not(private_broker: BrokerHandle) -> None:
    private_broker.create_topics({MEASUREMENTS_TOPIC: 4, "raw.aliunid.v1": 8})
    expected = {MEASUREMENTS_TOPIC: 8, "raw.aliunid.v1": 8, "states.v1": 8}  # states: absent
    assert partition_mismatches(private_broker.bootstrap, expected) == [
        PartitionMismatch(MEASUREMENTS_TOPIC, 4, 8)
    ]


def test_the_worker_refuses_to_start_and_names_the_fix(
    private_broker: BrokerHandle, tmp_path: Path
) -> None:
    app_id = "preflight-app"
    private_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, 4)})
    env = {
        **os.environ,
        "STREAMWARDEN_KAFKA_BOOTSTRAP": private_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true",
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_PARTITIONS": "8",
        "STREAMWARDEN_RULES_PATH": str(REPO / "rules"),
        "STREAMWARDEN_DATA_DIR": str(tmp_path / "data"),
        "STREAMWARDEN_OPS_ENABLED": "false",
    }
    # A worker that got past the check would run until killed: the timeout fails the test.
    done = subprocess.run(
        [sys.executable, "-m", "streamwarden", "worker", "--connect-timeout", "10"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"topic {MEASUREMENTS_TOPIC} has 4 partitions, this worker expects 8" in done.stderr
    assert "set STREAMWARDEN_PARTITIONS=4 (it is 8)" in done.stderr
    assert "Traceback" not in done.stderr

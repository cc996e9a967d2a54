"""A real Prometheus (Debian's package) scrapes the worker's /metrics and answers a query."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import (
    broker_env,
    free_port,
    get,
    new_entity,
    produce_frames,
    wait_until,
    worker_process,
)
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration


async def test_prometheus_scrapes_the_worker(
    fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        require_service("prometheus", "install Debian's prometheus package (.ci/run does)")
    assert binary is not None
    app_id = f"sw-prom-{unique_suffix}"
    env = broker_env(fresh_broker, app_id, 1)
    with (
        webhook_server() as hook,
        worker_process(env, tmp_path, hook.url("/prom")) as (proc, base, log),
    ):
        wait_until("ready", lambda: get(f"{base}/readyz")[0] == 200, 120, proc, log)
        await produce_frames(fresh_broker.bootstrap, new_entity(), [80.0])
        _scrape_and_query(binary, base, tmp_path)


def _scrape_and_query(binary: str, base: str, tmp_path: Path) -> None:
    """Run Prometheus against the worker until its query API returns the series."""
    config = tmp_path / "prometheus.yml"
    target = base.removeprefix("http://")
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: worker\n    static_configs: [{{targets: ['{target}']}}]\n",
        encoding="utf-8",
    )
    port = free_port()
    prom_log = tmp_path / "prometheus.log"
    with prom_log.open("wb") as out:
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        query = urllib.parse.quote(
            'streamwarden_notifications_total{channel="hook",outcome="sent"}'
        )
        deadline = time.monotonic() + 90
        result: list = []
        while time.monotonic() < deadline and not result:
            assert prometheus.poll() is None, prom_log.read_text()[-3000:]
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/v1/query?query={query}")
            except OSError:
                status, body = 0, b""
            if status == 200:
                found = json.loads(body)["data"]["result"]
                result = [r for r in found if float(r["value"][1]) >= 1]
            time.sleep(1)
        assert result, prom_log.read_text()[-3000:]
        assert result[0]["metric"]["job"] == "worker"
        up = json.loads(get(f"http://127.0.0.1:{port}/api/v1/query?query=up")[1])
        assert [r["value"][1] for r in up["data"]["result"]] == ["1"]
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(20)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()

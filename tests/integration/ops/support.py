"""A real worker process with its ops port, fed raw aliunid frames over Kafka."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from producers.envelope import RawEnvelope, encode_envelope, now_ms

RULES = """\
rules:
  - name: ops-power-high
    type: threshold
    match:
      source: aliunid
      metric: sys.kW
    condition: {op: ">", value: 40}
    severity: critical
    labels: {team: ops-test}
    summary: "{{ entity }} draws {{ value }} kW"
    channels: [hook]
  - name: ops-power-sustained
    type: threshold
    match:
      source: aliunid
      metric: sys.kW
    condition: {op: ">", value: 50}
    for: 1h
    severity: warning
    channels: [hook]
"""


def broker_env(broker: Any, app_id: str, partitions: int) -> dict[str, str]:
    """The worker's Kafka settings for ``broker`` (a BrokerHandle), its topics created."""
    from pipeline.topics import all_topics

    broker.create_topics({t.name: t.partitions for t in all_topics(app_id, partitions)})
    return {
        "STREAMWARDEN_KAFKA_BOOTSTRAP": broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": str(partitions),
        "STREAMWARDEN_APP_ID": app_id,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``: status and body (HTTP errors included; connection errors raise)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


async def produce_frames(bootstrap: str, entity: str, values: list[float]) -> None:
    """Send aliunid ``data`` frames for ``entity`` with ``values`` to ``raw.aliunid.v1``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            frame = {"type": "data", "id": entity, "data": {"sys": {"kW": value}}}
            envelope = RawEnvelope(
                source="aliunid",
                stream="ops-test",
                received_at_ms=now_ms(),
                payload=json.dumps(frame),
            )
            await producer.send("raw.aliunid.v1", encode_envelope(envelope), key=entity.encode())
        await producer.flush()
    finally:
        await producer.stop()


def new_entity() -> str:
    return str(uuid.uuid4())


@contextmanager
def worker_process(
    env: dict[str, str],
    tmp_path: Path,
    hook_url: str,
    name: str = "worker",
    channels_extra: str = "",
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A ``streamwarden worker`` with its ops port on a free port: ``(process, base url, log)``."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  hook:\n    url_env: OPS_HOOK_URL\n" + channels_extra, encoding="utf-8"
    )
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamwarden", "worker"],
            env={
                **os.environ,
                **env,
                "PYTHONUNBUFFERED": "1",
                "STREAMWARDEN_RULES_PATH": str(rules),
                "STREAMWARDEN_CHANNELS_FILE": str(channels),
                "STREAMWARDEN_OPS_PORT": str(port),
                "STREAMWARDEN_OPS_REFRESH_S": "0.5",
                "STREAMWARDEN_DATA_DIR": str(tmp_path / f"{name}-data"),
                "OPS_HOOK_URL": hook_url,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(
    what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes], log: Path
) -> Any:
    """Poll ``check()`` until it returns a truthy value; fail with the worker's log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited\n{log.read_text()[-4000:]}"
        try:
            last = check()
        except (ConnectionError, urllib.error.URLError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(
        f"{what}: not within {timeout}s (last: {last!r})\n{log.read_text()[-4000:]}"
    )

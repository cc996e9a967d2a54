"""The shared strict YAML loader (issue 16, defect 7), and sources.yaml read through it.

Before the fix ``sources.yaml`` accepted aliases at all (a 600-byte bomb took 48 s and 3 GB),
and every loader read ``010`` as 8 and ``1:30`` as 90 silently."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from producers.config import load_sources
from producers.errors import SourceConfigError
from producers.strict_yaml import StrictYAMLError, compose_strict, load_strict, read_limited
from producers.transports.websocket import WebSocketClient, is_clear_text

pytestmark = pytest.mark.timeout(30)


def bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nsources: *a{levels}\n"


def test_a_sources_file_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(bomb(), encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path, env={})
    assert time.monotonic() - started < 2.0
    assert f"{path}:1" in str(caught.value)
    assert "YAML anchor '&a0' is not allowed" in str(caught.value)


def test_ambiguous_scalars_in_sources_are_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - name: a\n    kind: aliunid\n    port: 010\n", "utf-8")
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path, env={})
    assert f"{path}:4" in str(caught.value) and "'010' is ambiguous" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["x: *nope\n", "x: &a 1\n", "x: 1:30\n", "x: 010\n", "x: yes\n", "x: 0x1F\n", "x: 1_000\n"],
)
def test_refused_with_a_line(text: str) -> None:
    with pytest.raises(StrictYAMLError) as caught:
        load_strict(text)
    assert caught.value.line == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x: '010'\n", "010"),
        ("x: 10\n", 10),
        ("x: 0\n", 0),
        ("x: 0.5\n", 0.5),
        ("x: '1:30'\n", "1:30"),
        ("x: true\n", True),
        ("x: 09:00-17:00\n", "09:00-17:00"),
        ("x: -12.5\n", -12.5),
    ],
)
def test_unambiguous_scalars_load_as_before(text: str, value: object) -> None:
    assert load_strict(text)[1] == {"x": value}


def test_node_and_depth_limits_stop_composition() -> None:
    with pytest.raises(StrictYAMLError, match="more than 100 YAML values"):
        compose_strict("[" + "1, " * 200 + "]", max_nodes=100)
    with pytest.raises(StrictYAMLError, match="nests too deep"):
        compose_strict("[" * 100 + "]" * 100, max_depth=10)


def test_read_limited_never_reads_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with path.open("wb") as file:
        file.truncate(4 * 1024**3)
    with pytest.raises(StrictYAMLError, match="larger than 1000 bytes"):
        read_limited(path, 1000)
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert read_limited(small, 3) == b"abc"


def test_a_variable_in_a_non_secret_field_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    """Issue 16, defect 9: ``${VAR}`` in a non-secret field echoed its (secret) value."""
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n  - name: a\n    kind: aliunid\n    url: ws://127.0.0.1:1/live\n"
        "    api_key: k\n    max_frame_bytes: ${LEAKY}\n",
        encoding="utf-8",
    )
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path, env={"LEAKY": "s3cr3t-v4lue-not-a-number"})
    assert "max_frame_bytes" in str(caught.value)
    assert "s3cr3t-v4lue" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "clear"),
    [
        ("ws://realtime.nobil.no/api/v1/stream?apikey=k", True),
        ("WS://example.com/live", True),
        ("wss://realtime.example.com/live", False),
        ("ws://127.0.0.1:8765/live", False),
        ("ws://localhost:8765/live", False),
    ],
)
def test_clear_text_websocket_urls_are_recognised(url: str, clear: bool) -> None:
    """Issue 16, defect 9: ws:// was accepted without the warning verify=no gets; the
    transport now warns once per run for these (see producers/transports/websocket.py)."""
    assert is_clear_text(url) is clear


async def test_a_clear_text_upstream_is_warned_about_once_with_its_key_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def ignore(frame: str | bytes) -> None:
        return None

    client = WebSocketClient(
        "ws://realtime.nobil.no/api/v1/stream?apikey=k-clear-0123", ignore, name="nobil-live"
    )
    stop = asyncio.Event()
    stop.set()  # no connection attempt: only the start-up check runs
    with caplog.at_level(logging.WARNING, logger="producers.transports.websocket"):
        await client.run(stop)
    assert "upstream connection is clear text (ws://, no TLS)" in caplog.text
    assert "source=nobil-live" in caplog.text
    assert "k-clear-0123" not in caplog.text

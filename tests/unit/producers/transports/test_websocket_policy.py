"""Transport decisions that need no server: status policy, URL errors, frame sizes."""

from __future__ import annotations

import asyncio

import pytest

from producers.errors import SourceConfigError
from producers.transports.websocket import (
    StatusAction,
    WebSocketClient,
    default_status_policy,
)
from producers.transports.websocket import _size_bytes as size_bytes


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (401, StatusAction.AUTH),
        (403, StatusAction.AUTH),
        (400, StatusAction.REJECTED),
        (404, StatusAction.REJECTED),
        (410, StatusAction.REJECTED),
        (408, StatusAction.RETRY),
        (429, StatusAction.RETRY),
        (500, StatusAction.RETRY),
        (502, StatusAction.RETRY),
        (503, StatusAction.RETRY),
        (301, StatusAction.RETRY),
    ],
)
def test_default_status_policy(status: int, action: StatusAction) -> None:
    assert default_status_policy(status) is action


async def test_invalid_url_is_a_config_error_without_the_key() -> None:
    async def ignore(frame: str | bytes, connection: int) -> None:
        raise AssertionError("no frame expected")

    client = WebSocketClient("http://h/live?apiKey=very-secret-key", ignore, name="s")
    async with asyncio.timeout(5):
        with pytest.raises(SourceConfigError) as info:
            await client.run(asyncio.Event())
    message = str(info.value)
    assert message == (
        "source 's': invalid WebSocket URL http://h/live?apiKey=***: scheme isn't ws or wss"
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


@pytest.mark.parametrize(
    ("message", "limit", "size"),
    [
        (b"abc", 10, 3),
        ("abc", 10, 3),
        ("é" * 10, 20, 20),  # UTF-8 bytes, not characters
        ("€" * 10, 20, 30),
        ("a" * 10, 20, 10),
    ],
)
def test_frame_size_is_measured_in_utf8_bytes(message: str | bytes, limit: int, size: int) -> None:
    assert size_bytes(message, limit) == size

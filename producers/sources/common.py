"""Helpers shared by the source modules."""

from __future__ import annotations

from producers.sources.base import SourceBase
from producers.transports.websocket import WebSocketOptions

__all__ = ["websocket_options"]


def websocket_options(source: SourceBase) -> WebSocketOptions:
    """The transport options a source entry asks for (common keys of the sources file)."""
    return WebSocketOptions(
        ping_interval=source.ping_interval,
        open_timeout=source.open_timeout,
        idle_timeout=source.idle_timeout,
        stable_after=source.stable_after,
        max_frame_bytes=source.max_frame_bytes,
        backoff_initial=source.backoff_initial,
        backoff_max=source.backoff_max,
        tls_verify=source.tls_verify,
    )

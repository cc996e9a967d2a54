"""Faithful local upstream servers for the demo and the tests, by source kind."""

from __future__ import annotations

from typing import Any

from producers.simulators.aliunid import AliunidSimulator

__all__ = ["SIMULATORS", "AliunidSimulator"]

#: ``kind -> simulator class``; each has ``async start(host, port) -> port``, ``async stop()``,
#: a ``url`` property and is an async context manager.
SIMULATORS: dict[str, type[Any]] = {
    "aliunid": AliunidSimulator,
}

"""Faithful local upstream servers for the demo and the tests, by source kind."""

from __future__ import annotations

from typing import Any

from producers.simulators.aliunid import AliunidSimulator
from producers.simulators.element import ElementSimulator
from producers.simulators.hemis import HemisSimulator
from producers.simulators.nobil import NobilSimulator
from producers.simulators.valtronics import ValtronicsSimulator

__all__ = [
    "SIMULATORS",
    "AliunidSimulator",
    "ElementSimulator",
    "HemisSimulator",
    "NobilSimulator",
    "ValtronicsSimulator",
]

#: ``kind -> simulator class``; each has ``async start(host, port) -> port``, ``async stop()``,
#: a ``url`` property and is an async context manager.
SIMULATORS: dict[str, type[Any]] = {
    "aliunid": AliunidSimulator,
    "nobil": NobilSimulator,
    "element": ElementSimulator,
    "valtronics": ValtronicsSimulator,
    "hemis": HemisSimulator,
}

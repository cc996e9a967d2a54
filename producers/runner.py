"""Run one configured source: pick its runner by ``kind`` and stream into a sink.

The registry is an explicit ``kind -> runner`` dict: adding an upstream means adding its
config model (:mod:`producers.config`), its module under :mod:`producers.sources` and one line
here. Nothing is discovered by import side effects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from producers.config import SourceConfig, source_kinds
from producers.errors import SinkError, SourceConfigError
from producers.sink import EnvelopeSink
from producers.sources.aliunid import run_aliunid
from producers.sources.element import run_element
from producers.sources.hemis import run_hemis
from producers.sources.nobil import run_nobil
from producers.sources.valtronics import run_valtronics

__all__ = ["RUNNERS", "SourceRunner", "run_source"]

logger = logging.getLogger(__name__)

#: ``runner(source, sink, stop)``; the source is the config model registered for its kind.
SourceRunner = Callable[[Any, EnvelopeSink, asyncio.Event], Awaitable[None]]

RUNNERS: dict[str, SourceRunner] = {
    "aliunid": run_aliunid,
    "nobil": run_nobil,
    "element": run_element,
    "valtronics": run_valtronics,
    "hemis": run_hemis,
}


async def run_source(
    source: SourceConfig,
    sink: EnvelopeSink,
    stop: asyncio.Event,
    *,
    flush_timeout: float = 30.0,
) -> None:
    """Stream ``source`` into ``sink`` until ``stop`` is set, then flush the sink.

    The sink is flushed on every exit (also when the upstream failed) but not closed: its
    owner closes it.

    Args:
        flush_timeout: bound on the final flush, seconds.

    Raises:
        UpstreamAuthError, UpstreamRejectedError: the upstream refused us; not retried.
        SourceConfigError: no runner is registered for the source's kind.
        SinkError: the sink failed, or the final flush timed out.
    """
    runner = RUNNERS.get(source.kind)
    if runner is None:
        known = ", ".join(sorted(RUNNERS)) or "none"
        raise SourceConfigError(
            f"source {source.name!r}: no runner for kind {source.kind!r}; known kinds: {known}"
        )
    logger.info("source starting source=%s kind=%s", source.name, source.kind)
    try:
        await runner(source, sink, stop)
    except BaseException:
        # Deliver what was buffered, but let the original error win over a flush failure.
        try:
            await _flush(source.name, sink, flush_timeout)
        except Exception as flush_exc:
            logger.error("final flush failed source=%s error=%s", source.name, flush_exc)
        raise
    await _flush(source.name, sink, flush_timeout)
    logger.info("source stopped source=%s kind=%s", source.name, source.kind)


async def _flush(name: str, sink: EnvelopeSink, flush_timeout: float) -> None:
    try:
        async with asyncio.timeout(flush_timeout):
            await sink.flush()
    except TimeoutError:
        raise SinkError(
            f"source {name!r}: sink flush did not finish within {flush_timeout:g}s"
        ) from None


def _check_registry() -> None:
    missing = set(source_kinds()) - set(RUNNERS)
    if missing:  # pragma: no cover - a programming error caught by the unit tests
        raise RuntimeError(f"no runner registered for kinds: {sorted(missing)}")


_check_registry()

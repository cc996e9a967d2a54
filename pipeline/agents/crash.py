"""Crash without losing anything.

faust's ``take_events`` acknowledges the whole batch in a ``finally`` block, so an exception
escaping an agent's batch would acknowledge (and later commit) events that were never processed
(faust #315). Bad *input* never gets here: it is dead-lettered per event. What does get here is a
bug or an infrastructure failure (Kafka refused our writes); then the worker exits at once,
with the error logged, before faust can acknowledge anything, and the records are processed
again after the restart.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


def exit_now(agent: str, exc: BaseException) -> None:
    """Log ``exc`` and end the process without unwinding (no ack, no commit)."""
    logger.critical("agent %s failed; exiting without acknowledging its batch", agent, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


async def batches_or_exit(
    agent: str,
    batches: AsyncIterator[Any],
    handle: Callable[[Any], Awaitable[None]],
) -> None:
    """Run ``handle`` on each batch; any exception ends the process (see module docstring)."""
    async for batch in batches:
        try:
            await handle(batch)
        except Exception as exc:
            exit_now(agent, exc)

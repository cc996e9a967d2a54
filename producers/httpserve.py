"""Serve a small aiohttp app on a host and port, the way every StreamWarden ops port does.

Shared by the producers' and the worker's ops ports (producers never import the pipeline, so
it lives here). A port that cannot be bound is logged as an error and reported as None: a
process must keep doing its work when its health port is taken.
"""

from __future__ import annotations

import logging

from aiohttp import web

__all__ = ["Served", "serve"]

logger = logging.getLogger(__name__)


class Served:
    """A running server: its bound port and how to stop it."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    async def stop(self) -> None:
        """Stop serving (closes open connections)."""
        await self._runner.cleanup()


async def serve(app: web.Application, host: str, port: int, what: str) -> Served | None:
    """Serve ``app`` on ``host:port`` (0: any free port); None, logged, if it cannot bind.

    Args:
        what: names the process in the log line (``the worker``, ``source=aliunid-main``).
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        logger.error(
            "ops port not served, running without it process=%s host=%s port=%d error=%s",
            what,
            host,
            port,
            exc.strerror or exc,
        )
        return None
    sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    logger.info("ops server listening process=%s url=http://%s:%d/", what, host, bound)
    return Served(runner, bound)

"""What every simulator shares: the bound address, the ``started`` check, the async context.

Subclasses set ``_server`` (None until started), ``_host`` and ``_port`` in ``start`` and
implement ``start(host, port) -> int`` and ``stop()``; the protocol is all theirs.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class SimulatorServer:
    """Lifecycle shared by the simulators (one socket server each)."""

    _server: Any
    _host: str
    _port: int

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        self._require_started()
        return self._port

    def _base_url(self, scheme: str = "ws") -> str:
        """``ws://host:port`` of the running server (IPv6 hosts bracketed)."""
        self._require_started()
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    def _require_started(self) -> None:
        if self._server is None:
            raise RuntimeError("simulator not started")

"""What every simulator shares: the lifecycle (listen, tick, stop), the bound address, the
async context, and fault injection.

Lifecycle: :meth:`SimulatorServer.start` installs the wire-log filter, serves ``_handle``
with ``_process_request`` (plus the simulator's ``_serve_options``) and starts a ticker that
calls ``_tick`` every ``interval`` seconds (without bursting after it fell behind), plus any
``_extra_tasks``; :meth:`SimulatorServer.stop` cancels those tasks, closes every connection
(1001 going away) and stops listening. A subclass sets ``kind``, ``interval``,
``_wire_logger`` and ``_wire_filter`` and implements ``_handle``, ``_process_request`` and
``_tick``; the protocol is all theirs.

Fault injection (the producers' fault matrix): :meth:`SimulatorServer.inject_fault` plans a
clean close (close frame, code 1013 "try again later") or an abort (TCP connection dropped, no
close frame) for the next ``connections`` connections, at one phase of the protocol:

* ``handshake``: right after the WebSocket handshake, before the server sends or reads anything;
* ``auth``: right after the server accepted the credentials (Valtronics ``auth_response``, Hemis
  ``CONNECTED``);
* ``subscribe``: while the client subscribes: after the first subscription the server pushes
  ``frames`` data frames, then the fault (the client may still be sending subscriptions);
* ``stream``: once ``frames`` data frames were sent on the connection.

Each simulator calls :meth:`SimulatorServer._fault` at the phases its protocol has; the
fault is applied right after a frame was written, so everything the server recorded as sent
was handed to the socket before the connection ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request

__all__ = ["Fault", "FaultAction", "FaultPhase", "SimulatorServer"]

logger = logging.getLogger(__name__)

FaultPhase = Literal["handshake", "auth", "subscribe", "stream"]
FaultAction = Literal["close", "abort"]


@dataclass(frozen=True)
class Fault:
    """A planned end of one connection (see the module docstring)."""

    phase: FaultPhase
    action: FaultAction
    frames: int = 0


class SimulatorServer:
    """Lifecycle shared by the simulators (one socket server each)."""

    #: The family; names the ticker task and the log lines.
    kind: ClassVar[str]
    interval: float
    _server: Server | None
    _host: str
    _port: int
    _wire_logger: logging.Logger
    _wire_filter: logging.Filter
    connections_accepted: int
    _fault_plan: dict[int, Fault]
    faults_applied: int = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 picks a free port) and start ticking.

        Returns:
            The bound port.
        """
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._before_start()
        self._wire_logger.addFilter(self._wire_filter)
        options: dict[str, Any] = {
            "process_request": self._process_request,
            "ping_interval": None,
            "close_timeout": 2.0,
            "logger": self._wire_logger,
        }
        options.update(self._serve_options())
        self._server = await serve(self._handle, host, port, **options)
        self._host = host
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._tasks = [
            asyncio.create_task(self._run_ticker(), name=f"{self.kind}-simulator-ticker"),
            *(asyncio.create_task(work) for work in self._extra_tasks()),
        ]
        self._log_started()
        return self._port

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening. Idempotent."""
        tasks: list[asyncio.Task[None]] = self.__dict__.get("_tasks", [])
        self._tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            server, self._server = self._server, None
            server.close(close_connections=True)
            async with asyncio.timeout(10):
                await server.wait_closed()
            self._wire_logger.removeFilter(self._wire_filter)
            self._logger.info("%s simulator stopped port=%d", self.kind, self._port)

    # ------------------------------------------------------------------ hooks

    async def _handle(self, connection: ServerConnection) -> None:
        raise NotImplementedError

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Any:  # Response | None, or an awaitable of it
        raise NotImplementedError

    async def _tick(self) -> None:
        """One step of the simulation and its delivery to the connected clients."""
        raise NotImplementedError

    def _serve_options(self) -> dict[str, Any]:
        """Extra keyword arguments for ``websockets.serve`` (subprotocols, TLS, pings...)."""
        return {}

    def _before_start(self) -> None:
        """Called first by :meth:`start`."""

    def _extra_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """Background work besides the ticker, cancelled by :meth:`stop`."""
        return []

    def _log_started(self) -> None:
        self._logger.info(
            "%s simulator listening url=%s interval_s=%g",
            self.kind,
            self._base_url(),
            self.interval,
        )

    @property
    def _logger(self) -> logging.Logger:
        """The simulator module's own logger (its log lines keep their origin)."""
        return logging.getLogger(type(self).__module__)

    async def _run_ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > self.interval:
                next_at = loop.time()  # fell behind (suspended laptop): do not burst
            await self._tick()

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

    # ------------------------------------------------------------------ fault injection

    def inject_fault(
        self,
        phase: FaultPhase,
        action: FaultAction,
        *,
        frames: int = 0,
        connections: int = 1,
    ) -> None:
        """End each of the next ``connections`` connections at ``phase`` (close or abort).

        Args:
            frames: ``subscribe``: data frames pushed after the first subscription;
                ``stream``: data frames sent before the fault.
        """
        if connections < 1 or frames < 0:
            raise ValueError("connections must be >= 1 and frames >= 0")
        plan = self._faults()
        first = self.connections_accepted + 1
        for number in range(first, first + connections):
            plan[number] = Fault(phase, action, frames)

    def planned_fault(self, number: int, phase: FaultPhase) -> Fault | None:
        """The fault planned for connection ``number`` at ``phase``, if any."""
        fault = self._faults().get(number)
        return fault if fault is not None and fault.phase == phase else None

    async def _fault(
        self, connection: ServerConnection, number: int, phase: FaultPhase, sent: int = 0
    ) -> bool:
        """Apply the fault planned for this connection and phase; whether one was applied.

        Args:
            sent: data frames sent so far in this phase (``stream`` waits for ``frames``).
        """
        fault = self.planned_fault(number, phase)
        if fault is None or (phase == "stream" and sent < fault.frames):
            return False
        del self._faults()[number]
        self.faults_applied += 1
        logger.info(
            "fault injected connection=%d phase=%s action=%s frames=%d",
            number,
            phase,
            fault.action,
            sent,
        )
        if fault.action == "abort":
            connection.transport.abort()
        else:
            await connection.close(CloseCode.TRY_AGAIN_LATER, f"fault injected at {phase}")
        return True

    def _faults(self) -> dict[int, Fault]:
        plan = self.__dict__.get("_fault_plan")
        if plan is None:
            plan = self._fault_plan = {}
        return plan

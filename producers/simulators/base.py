"""What every simulator shares: the bound address, the ``started`` check, the async context,
and fault injection.

Subclasses set ``_server`` (None until started), ``_host`` and ``_port`` in ``start`` and
implement ``start(host, port) -> int`` and ``stop()``; the protocol is all theirs.

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

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

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

    _server: Any
    _host: str
    _port: int
    connections_accepted: int
    _fault_plan: dict[int, Fault]
    faults_applied: int = 0

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

"""Topic creation for an embedded broker started on its own (``streamwarden broker``).

librdkafka's mock cluster refuses CreateTopics (see :mod:`streamwarden.embedded_broker`): only
the process that owns it can add a topic. Tests that share one broker each need topics of
their own, so ``streamwarden broker`` also listens on a local control port and prints it as
``STREAMWARDEN_EMBEDDED_BROKER_CONTROL``; :func:`create_topics` sends it one JSON line
``{"create_topics": {"name": partitions}}`` and reads ``{"ok": true}`` or
``{"ok": false, "error": "..."}``. It binds to 127.0.0.1 only and does nothing else: it is a
development tool like the broker itself.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping

__all__ = ["CONTROL_ENV", "BrokerControlError", "create_topics", "serve_control"]

CONTROL_ENV = "STREAMWARDEN_EMBEDDED_BROKER_CONTROL"
_MAX_REQUEST_BYTES = 1 << 20


class BrokerControlError(RuntimeError):
    """The control port refused a request or could not be reached."""


def serve_control(
    create: Callable[[Mapping[str, int]], None], host: str = "127.0.0.1"
) -> socketserver.ThreadingTCPServer:
    """Start serving in a daemon thread; returns the server (``server_address`` has the port).

    Args:
        create: creates topics (name -> partitions) on the broker.
    """

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline(_MAX_REQUEST_BYTES)
            try:
                request = json.loads(line)
                topics = request["create_topics"]
                if not isinstance(topics, dict) or not all(
                    isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in topics.items()
                ):
                    raise ValueError("create_topics must map topic names to partition counts")
                create(topics)
                answer: dict[str, object] = {"ok": True}
            except Exception as exc:  # every failure goes back to the caller as text
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    server = socketserver.ThreadingTCPServer((host, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="broker-control", daemon=True).start()
    return server


def create_topics(address: str, topics: Mapping[str, int], timeout: float = 30.0) -> None:
    """Ask the broker behind ``address`` (``host:port``) to create ``topics``.

    Raises:
        BrokerControlError: unreachable, or the broker refused (the message says why).
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(json.dumps({"create_topics": dict(topics)}).encode() + b"\n")
            reply = conn.makefile("rb").readline(_MAX_REQUEST_BYTES)
    except (OSError, ValueError) as exc:
        raise BrokerControlError(f"broker control at {address} unreachable: {exc}") from exc
    try:
        answer = json.loads(reply)
    except ValueError as exc:
        raise BrokerControlError(f"broker control at {address} answered {reply!r}") from exc
    if not answer.get("ok"):
        raise BrokerControlError(f"broker control at {address}: {answer.get('error')}")

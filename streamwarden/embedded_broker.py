"""An embedded Kafka broker for the demo and the tests: librdkafka's mock cluster.

The confluent-kafka wheel bundles librdkafka, whose mock-cluster API speaks the Kafka protocol
on 127.0.0.1. aiokafka and faust connect to it over real TCP like to any broker. It keeps
nothing on disk, cannot create topics on request (CreateTopics is unsupported: every topic must
be created here, changelogs included, with matching partition counts), and keeps at most 5 MiB
or 100,000 batches per partition.

The cluster lives in a child process so that a crash or a hung librdkafka thread can never take
the caller down, and so that it can be killed as a whole. Parent and child talk JSON lines over
the child's stdin/stdout. The child exits when its stdin reaches EOF, which happens whenever the
parent dies for any reason, and it also asks Linux to signal it when the parent dies, so no
orphan broker outlives its parent.

Run ``python -m streamwarden.embedded_broker`` to serve in the foreground (used by ``streamwarden
broker``); :class:`EmbeddedBroker` is the parent-side handle.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from streamwarden.process import DIE_WITH_PARENT_ENV, die_with_parent

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError"]

_RD_KAFKA_PRODUCER = 0


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start or refused a command."""


def _librdkafka_path() -> str:
    """Locate the librdkafka shared object bundled in the confluent-kafka wheel."""
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbeddedBrokerError(
            "the embedded broker needs the confluent-kafka package; install StreamWarden "
            "with its dependencies (pip install -e .)"
        ) from exc
    package_dir = Path(confluent_kafka.__file__).resolve().parent
    candidates = sorted(
        glob.glob(str(package_dir.parent / "confluent_kafka.libs" / "librdkafka*.so*"))
    )
    if not candidates:
        raise EmbeddedBrokerError(
            f"no bundled librdkafka found next to {package_dir}; the embedded broker needs the "
            "confluent-kafka binary wheel (not a source build)"
        )
    return candidates[0]


class _MockCluster:
    """ctypes binding of the few mock-cluster calls we use. Lives only in the child."""

    def __init__(self, broker_count: int, rebalance_delay_ms: int) -> None:
        lib = ctypes.CDLL(_librdkafka_path())
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_set.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
        lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.rd_kafka_mock_broker_set_down.restype = ctypes.c_int
        lib.rd_kafka_mock_broker_set_down.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.rd_kafka_mock_broker_set_up.restype = ctypes.c_int
        lib.rd_kafka_mock_broker_set_up.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.restype = None
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int32,
        ]
        lib.rd_kafka_mock_cluster_destroy.restype = None
        lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_destroy.restype = None
        lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
        self._lib = lib

        conf = lib.rd_kafka_conf_new()
        errbuf = ctypes.create_string_buffer(512)
        # The handle only hosts the mock cluster; silence its "no bootstrap.servers" notice.
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", errbuf, len(errbuf))
        self._rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errbuf, len(errbuf))
        if not self._rk:
            raise EmbeddedBrokerError(
                f"rd_kafka_new failed: {errbuf.value.decode(errors='replace')}"
            )
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, broker_count)
        if not self._mc:
            raise EmbeddedBrokerError("rd_kafka_mock_cluster_new failed")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mc, rebalance_delay_ms)
        self.broker_count = broker_count

    @property
    def bootstrap(self) -> str:
        return str(self._lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode())

    def create_topic(self, name: str, partitions: int) -> None:
        err = self._lib.rd_kafka_mock_topic_create(self._mc, name.encode(), partitions, 1)
        if err:
            raise EmbeddedBrokerError(f"cannot create topic {name!r}: librdkafka error {err}")

    def set_down(self) -> None:
        for broker_id in range(1, self.broker_count + 1):
            self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def set_up(self) -> None:
        for broker_id in range(1, self.broker_count + 1):
            self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def destroy(self) -> None:
        self._lib.rd_kafka_mock_cluster_destroy(self._mc)
        self._lib.rd_kafka_destroy(self._rk)


def serve(
    stdin: IO[str], stdout: IO[str], *, broker_count: int = 1, rebalance_delay_ms: int = 500
) -> None:
    """Child side: run the mock cluster and answer JSON-line commands until EOF or ``stop``.

    Commands: ``{"op": "create_topics", "topics": {name: partitions}}``, ``{"op": "down"}``,
    ``{"op": "up"}``, ``{"op": "stop"}``. Every command is answered with ``{"ok": true}`` or
    ``{"ok": false, "error": "..."}``. The first line written is ``{"bootstrap": "host:port"}``.
    """
    cluster = _MockCluster(broker_count, rebalance_delay_ms)
    created: dict[str, int] = {}

    def reply(obj: Mapping[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    reply({"bootstrap": cluster.bootstrap})
    try:
        for line in stdin:
            try:
                command = json.loads(line)
                op = command["op"]
                if op == "create_topics":
                    for name, partitions in command["topics"].items():
                        if name in created:
                            if created[name] != int(partitions):
                                raise EmbeddedBrokerError(
                                    f"topic {name!r} exists with {created[name]} partitions, "
                                    f"not {partitions}"
                                )
                            continue
                        cluster.create_topic(name, int(partitions))
                        created[name] = int(partitions)
                elif op == "down":
                    cluster.set_down()
                elif op == "up":
                    cluster.set_up()
                elif op == "stop":
                    reply({"ok": True})
                    break
                else:
                    raise EmbeddedBrokerError(f"unknown command {op!r}")
            except (EmbeddedBrokerError, KeyError, TypeError, ValueError) as exc:
                reply({"ok": False, "error": str(exc)})
            else:
                reply({"ok": True})
    finally:
        cluster.destroy()


class EmbeddedBroker:
    """Parent-side handle of an embedded broker running in a child process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Methods are thread-safe and
    quick (a pipe round trip), so they may be called from async code.
    """

    def __init__(self, *, rebalance_delay_ms: int = 500, start_timeout: float = 30.0) -> None:
        self._rebalance_delay_ms = rebalance_delay_ms
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._bootstrap: str | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the running broker."""
        if self._bootstrap is None:
            raise EmbeddedBrokerError("the embedded broker is not running")
        return self._bootstrap

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        """Start the child process and return its bootstrap address."""
        if self._proc is not None:
            return self.bootstrap
        self._proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [
                sys.executable,
                "-m",
                "streamwarden.embedded_broker",
                "--rebalance-delay-ms",
                str(self._rebalance_delay_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, DIE_WITH_PARENT_ENV: str(os.getpid())},
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
        )
        self._reader = threading.Thread(
            target=self._pump_lines,
            args=(self._proc.stdout,),
            name="embedded-broker-reader",
            daemon=True,
        )
        self._reader.start()
        first = self._read_line(self._start_timeout)
        try:
            self._bootstrap = str(json.loads(first)["bootstrap"])
        except (ValueError, KeyError) as exc:
            self.stop()
            raise EmbeddedBrokerError(f"embedded broker did not start: {first!r}") from exc
        return self._bootstrap

    def _pump_lines(self, stream: IO[str]) -> None:
        """Move the child's answers into a queue; an empty string marks EOF."""
        for line in stream:
            self._lines.put(line)
        self._lines.put("")

    def _read_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            code = self._proc.poll() if self._proc else None
            raise EmbeddedBrokerError(
                f"embedded broker gave no answer within {timeout:.0f}s (exit code {code})"
            )
        return line

    def _command(self, command: Mapping[str, Any], timeout: float = 10.0) -> None:
        with self._lock:
            if self._proc is None or self._proc.stdin is None or self._proc.poll() is not None:
                raise EmbeddedBrokerError("the embedded broker is not running")
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            answer = json.loads(self._read_line(timeout))
        if not answer.get("ok"):
            raise EmbeddedBrokerError(str(answer.get("error", "unknown error")))

    def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create topics (name -> partitions); existing ones with the same count are kept."""
        self._command({"op": "create_topics", "topics": dict(topics)})

    def set_down(self) -> None:
        """Simulate a broker outage: connections are refused, data is kept."""
        self._command({"op": "down"})

    def set_up(self) -> None:
        """End a simulated outage."""
        self._command({"op": "up"})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child: polite ``stop``, then SIGTERM, then SIGKILL. Idempotent."""
        proc, self._proc, self._bootstrap = self._proc, None, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.close()  # EOF: the child destroys the cluster and exits
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, OSError):
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if self._reader is not None:
                self._reader.join(timeout)
                self._reader = None
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
            self._lines = queue.Queue()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Child entry point (``python -m streamwarden.embedded_broker``)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Serve librdkafka's mock Kafka cluster (child process)."
    )
    parser.add_argument("--rebalance-delay-ms", type=int, default=500)
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve(sys.stdin, sys.stdout, rebalance_delay_ms=args.rebalance_delay_ms)


if __name__ == "__main__":
    main()

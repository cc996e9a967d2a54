"""Child-process plumbing for ``streamwarden demo``: start, watch and stop the parts in order.

Children run in their own session so a terminal Ctrl-C reaches only the supervisor, which then
stops them in a safe order (producers flush before the broker goes away). Each child also asks
Linux to SIGKILL it if the supervisor dies, so no part outlives a killed demo.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
DIE_WITH_PARENT_ENV = "STREAMWARDEN_DIE_WITH_PARENT"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit now if it already has.

    SIGKILL, not SIGTERM: a supervisor that died abnormally coordinates nothing any more, and a
    graceful faust shutdown can hang for ever once the embedded broker (a sibling) is gone
    (seen: workers orphaned for hours after their demo was SIGKILLed).
    """
    if not sys.platform.startswith("linux"):
        return
    expected_parent = os.environ.get(DIE_WITH_PARENT_ENV)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # pragma: no cover - exotic libc
        return
    if expected_parent and expected_parent.isdigit() and os.getppid() != int(expected_parent):
        os._exit(1)  # the parent died before prctl took effect


@dataclass
class Child:
    """A running part of the demo."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    stdout: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> int:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def start_child(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    capture_stdout: bool = False,
) -> Child:
    """Start ``python -m streamwarden ARGS`` with stderr to ``log_path``.

    stdout is inherited (so console notifications show in the terminal) unless
    ``capture_stdout``, in which case it is a pipe the caller reads.
    """
    full_env = {**os.environ, **env, DIE_WITH_PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    log = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "streamwarden", *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture_stdout else None,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    return Child(name=name, proc=proc, log_path=log_path, stdout=proc.stdout)

"""A demo part outlives neither a SIGKILLed supervisor nor a shutdown that would hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_child_that_ignores_sigterm_still_dies_with_its_killed_parent() -> None:
    # The child ignores SIGTERM, like a faust worker stuck in a graceful shutdown.
    child_code = (
        "import os, signal, sys, time\n"
        "from streamwarden.process import die_with_parent\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "die_with_parent()\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        from streamwarden.process import DIE_WITH_PARENT_ENV
        env = {{**os.environ, DIE_WITH_PARENT_ENV: str(os.getpid())}}
        child = subprocess.Popen([sys.executable, "-c", {child_code!r}], env=env)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        os.kill(child_pid, 0)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            try:
                state = Path(f"/proc/{child_pid}/stat").read_text().split()[2]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child outlived its SIGKILLed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

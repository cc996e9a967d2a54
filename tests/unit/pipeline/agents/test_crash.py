"""An agent batch that raises ends the process at once (no ack, no commit), loudly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from pipeline.agents.crash import EXIT_CODE


def test_exception_in_a_batch_exits_with_the_error_logged() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging
        from pipeline.agents.crash import batches_or_exit
        logging.basicConfig()
        handled = []

        async def batches():
            for batch in ([1], [2], [3]):
                yield batch

        async def handle(batch):
            if batch == [2]:
                raise RuntimeError("kafka refused the batch")
            handled.append(batch)
            print("handled", batch, flush=True)

        async def main():
            try:
                await batches_or_exit("test_agent", batches(), handle)
            finally:
                print("finally ran (it must not: that is where faust acks)", flush=True)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == EXIT_CODE
    assert result.stdout.splitlines() == ["handled [1]"]
    assert "agent test_agent failed; exiting without acknowledging its batch" in result.stderr
    assert "RuntimeError: kafka refused the batch" in result.stderr

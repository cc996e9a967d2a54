"""Garbage-collector settings of the worker process.

Why: CPython's cyclic collector runs a young-generation pass every 700 net allocations of
tracked objects and, every hundred of those, a full pass over every tracked object in the
process. The worker allocates a few such objects per record on every stage (decoded
structs, their label dicts, transitions, per-batch lists) while holding a large, long-lived
heap it never frees: faust, aiokafka, pydantic and apprise classes and modules, the loaded
rules, the tables. On the ``full_pipeline`` benchmark the collector took ~12% of the worker's
CPU (``gc.callbacks`` timing; with the collector off the same run used 0.082 instead of
0.094 CPU-s per 1,000 events), most of it full passes re-walking that start-up heap.

Two settings remove most of that cost without turning collection off:

- :func:`gc.freeze` once everything is built moves the start-up heap to the permanent
  generation: full passes no longer walk it (it is never freed anyway);
- a young generation of :data:`YOUNG_THRESHOLD` allocations instead of 700 makes every pass
  rarer; a pass costs about the objects it walks, so the young passes cost about the same in
  all, and the older generations are visited far less often. Reference cycles are still
  collected, a little later: at most that many young objects wait for a pass.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

__all__ = ["OLDER_THRESHOLD", "YOUNG_THRESHOLD", "tune_collector"]

logger = logging.getLogger(__name__)

YOUNG_THRESHOLD: Final = 50_000
"""Net allocations of tracked objects between young-generation passes (CPython: 700)."""
OLDER_THRESHOLD: Final = 10
"""Passes of a generation between passes of the next one (CPython's default, kept)."""


def tune_collector() -> None:
    """Freeze what exists now and space the collector's passes out; see the module docstring.

    Call once, when the worker has built its app, rules and channels and before it runs:
    what exists then lives as long as the process.
    """
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    logger.info(
        "garbage collector tuned frozen=%d young_threshold=%d",
        gc.get_freeze_count(),
        YOUNG_THRESHOLD,
    )

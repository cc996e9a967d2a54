"""faust, with its hot spots fixed by subclasses, in one place.

The stateful stages (``evaluate_rules``, ``send_notifications``) are faust agents over tables.
Stock faust-streaming 0.15.3 spends most of such a pipeline's time in per-message and
per-record machinery (figures in issue 18 and ``benchmarks/README.md``); each module here
replaces one such path by a subclass, names the faust lines it replaces, and says why it is
safe:

- :mod:`pipeline.runtime.consumer`: drain a fetch without mode's four tasks per message, and
  a configurable fetch wait;
- :mod:`pipeline.runtime.producer`: record batches per partition (one future per batch);
- :mod:`pipeline.runtime.tables`: a table whose changelog writes are queued and flushed as one
  record batch per partition, recovered by a plain read of its changelog;
- :mod:`pipeline.runtime.app`: the app and transport that wire those in, and the settings.

Nothing here patches a faust module. ``tests/unit/pipeline/runtime`` fails when a faust
upgrade changes a method or attribute these subclasses rely on; faust-streaming is pinned in
``pyproject.toml`` to the versions those tests passed with.
"""

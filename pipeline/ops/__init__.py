"""The operator's view of a worker: metrics, health, readiness, a JSON API and a page.

Modules, one job each:

- :mod:`pipeline.ops.history`: the durable notification history (``notifications.v1``);
- :mod:`pipeline.ops.cluster`: what Kafka says (alert state changelog, alerts, history,
  consumer groups and lag), the same for every worker and for the CLI;
- :mod:`pipeline.ops.metrics`: the Prometheus registry and its collector;
- :mod:`pipeline.ops.readiness`: ``/readyz`` from the worker's parts;
- :mod:`pipeline.ops.server`: the aiohttp server (``/metrics``, ``/healthz``, ``/readyz``,
  ``/api/*``, ``/``);
- :mod:`pipeline.ops.page`: the read-only page (one HTML document, no external assets);
- :mod:`pipeline.ops.logs`: one log format for our loggers and faust/mode/aiokafka.

Nothing here changes what the stages do: they are read through small providers.
"""

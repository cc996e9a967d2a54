"""Delivery: apprise channels (``channels.py``), the notifier with its one retry loop and the
per-channel delivery queue (``sender.py``), failure reasons from apprise's log (``reasons.py``)
and the worker's and CLI's glue (``tools.py``: build_dispatcher, preview, send_test,
silences_path). Builds on :mod:`pipeline.alerting` (channels.yaml, routing, templates,
notification intents), never the other way round.
"""

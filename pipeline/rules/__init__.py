"""Alerting rules: YAML files in, alert transitions out; plain Python, no faust.

- :mod:`~pipeline.rules.schema`: pydantic models of a rule file, one per rule type
  (``threshold``, ``aggregate``, ``absence``, ``state``); ``rules/schema.json`` is generated
  from them by ``python -m pipeline.rules.schema``.
- :mod:`~pipeline.rules.duration`: the ``Duration`` type (``30s``, ``5m``, ``1h30m``...).
- :mod:`~pipeline.rules.loader`: :func:`~pipeline.rules.loader.load_rules` reads files and
  folders and reports every problem at once as ``file:line: key: what; expected``.
- :mod:`~pipeline.rules.templates`: sandboxed Jinja2 for ``summary`` and ``description``.
- :mod:`~pipeline.rules.lifecycle`: ok -> pending -> firing -> resolved, with ``for`` and
  ``clear.for`` deadlines, as pure functions.
- :mod:`~pipeline.rules.state`: the msgspec structs the engine keeps per alert and their
  msgpack encoding.
- :mod:`~pipeline.rules.engine`: :class:`~pipeline.rules.engine.RuleEngine` evaluates
  measurements and state events in event time against state held by the caller, and
  applies due deadlines when asked (:meth:`~pipeline.rules.engine.RuleEngine.expire`).
- :mod:`~pipeline.rules.runtime`: :class:`~pipeline.rules.runtime.RuleRuntime` adds a clock
  and a timer heap, driven the same way by the live worker and by replay.

Window arithmetic and aggregates live in :mod:`pipeline.windows`.
"""

"""Alerting rules: YAML files in, alert transitions out; plain Python, no faust.

- :mod:`~pipeline.rules.schema`: pydantic models of a rule file (``rules/schema.json`` is
  generated from them by ``python -m pipeline.rules.schema``).
- :mod:`~pipeline.rules.duration`: the ``Duration`` type (``30s``, ``5m``, ``1h30m``...).
- :mod:`~pipeline.rules.loader`: :func:`~pipeline.rules.loader.load_rules` reads files and
  folders and reports every problem at once as ``file:line: key: what; expected``.
- :mod:`~pipeline.rules.templates`: sandboxed Jinja2 for ``summary`` and ``description``.
- :mod:`~pipeline.rules.engine`: :class:`~pipeline.rules.engine.RuleEngine` evaluates
  measurements in event time against alert state held by the caller.
"""

"""The one strict YAML loader for every file StreamWarden reads (rules, channels, sources).

Why it lives in ``producers``: producers must never import ``pipeline`` (a boundary test
checks it), while ``pipeline`` already imports the dependency-free producer modules it shares
(``producers.envelope``, ``producers.redact``). This module needs only PyYAML and the standard
library, so both sides can use it.

What "strict" means, each checked as early as possible:

- **Size before parsing**: :func:`read_limited` reads at most ``max_bytes + 1`` bytes, so a
  4 GB file is refused after reading one megabyte, not after reading it whole.
- **No anchors or aliases, refused at the first event**: the composer stops at the first
  ``&anchor`` or ``*alias`` it meets, before building anything from it, so an alias bomb
  (or 100 KB of ``- *x``) costs one event, not an expansion.
- **Node and depth limits while composing**: more than ``max_nodes`` nodes or nesting deeper
  than ``max_depth`` stops composition at once.
- **No ambiguous scalars**: PyYAML implements YAML 1.1, where ``010`` is 8 (octal), ``1:30``
  is 90 (base 60), ``1_000`` is 1000 and ``yes``/``no``/``on``/``off`` are booleans; YAML 1.2
  (and most people) read them differently. Rather than silently pick one, such an unquoted
  scalar is refused with a hint (write ``10`` or ``'010'``, ``true``, ``'1:30'``...).
- **Errors** are :class:`StrictYAMLError` with a 1-based line, so every caller reports
  ``file:line: what is wrong``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import Node

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "StrictLoader",
    "StrictYAMLError",
    "compose_strict",
    "load_strict",
    "read_limited",
]

DEFAULT_MAX_NODES = 200_000
"""Most YAML nodes (scalars, lists, mappings) one file may hold."""
DEFAULT_MAX_DEPTH = 64
"""Deepest nesting of lists and mappings."""


class StrictYAMLError(ValueError):
    """A YAML file breaks a strict-loader rule.

    Attributes:
        line: 1-based line of the offending event (0: the file as a whole).
        message: what is wrong and what to write instead.
    """

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}" if line else message)


_AMBIGUOUS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"[-+]?0[0-9_]+(\.[0-9_]*)?"),
        "is ambiguous: a leading zero makes it octal in YAML 1.1; write it without the "
        "leading zero, or in quotes for text",
    ),
    (
        re.compile(r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"),
        "is ambiguous: YAML 1.1 reads it as a base-60 number; put it in quotes",
    ),
    (
        re.compile(r"[-+]?(0b[0-1_]+|0x[0-9a-fA-F_]+|[0-9]+(_[0-9]+)+(\.[0-9_]*)?)"),
        "is ambiguous between YAML versions; write a plain decimal number, or quote it",
    ),
    (
        re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"),
        "is ambiguous: YAML 1.1 reads it as a boolean, YAML 1.2 as text; write true or "
        "false, or put it in quotes for text",
    ),
]


def ambiguity(value: str) -> str | None:
    """Why an unquoted scalar is ambiguous between YAML 1.1 and 1.2, or None."""
    for pattern, why in _AMBIGUOUS:
        if pattern.fullmatch(value):
            return why
    return None


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the checks of the module docstring, applied while composing.

    Raises :class:`StrictYAMLError` from :meth:`compose_node`; PyYAML's own errors
    (``yaml.MarkedYAMLError``) pass through unchanged for the caller to word.
    """

    def __init__(
        self,
        stream: str,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        collect_ambiguous: bool = False,
    ) -> None:
        super().__init__(stream)
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.nodes = 0
        self.depth = 0
        self.collect_ambiguous = collect_ambiguous
        self.ambiguous: list[StrictYAMLError] = []
        """With ``collect_ambiguous``: the ambiguous scalars met (each kept as text), for a
        caller that reports every problem of a file at once."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise StrictYAMLError(
                line,
                f"YAML alias '*{event.anchor}' is not allowed; write the value out in full "
                "(anchors and aliases are refused)",
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise StrictYAMLError(
                line,
                f"YAML anchor '&{event.anchor}' is not allowed; write the value out in full "
                "(anchors and aliases are refused)",
            )
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise StrictYAMLError(line, f"more than {self.max_nodes} YAML values; split the file")
        if (
            isinstance(event, ScalarEvent)
            and event.style is None
            and event.tag is None
            and (why := ambiguity(event.value)) is not None
        ):
            problem = StrictYAMLError(line, f"{event.value!r} {why}")
            if not self.collect_ambiguous:
                raise problem
            self.ambiguous.append(problem)
            event.implicit = (False, True)  # resolve as text from here on
        if isinstance(event, CollectionStartEvent):
            self.depth += 1
            if self.depth > self.max_depth:
                raise StrictYAMLError(
                    line, f"YAML nests too deep; use at most {self.max_depth} levels"
                )
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        return super().compose_node(parent, index)


def compose_strict(
    text: str, *, max_nodes: int = DEFAULT_MAX_NODES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Node | None:
    """The node tree of a single-document YAML text (None if empty).

    Raises:
        StrictYAMLError: a strict-loader rule is broken.
        yaml.YAMLError: the text is not YAML.
    """
    return _load(text, max_nodes, max_depth, construct=False)[0]


def load_strict(
    text: str, *, max_nodes: int = DEFAULT_MAX_NODES, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Node | None, Any]:
    """``(node tree, plain data)`` of a single-document YAML text.

    Raises:
        StrictYAMLError: a strict-loader rule is broken.
        yaml.YAMLError: the text is not YAML.
    """
    return _load(text, max_nodes, max_depth, construct=True)


def _load(text: str, max_nodes: int, max_depth: int, *, construct: bool) -> tuple[Node | None, Any]:
    loader = StrictLoader(text, max_nodes=max_nodes, max_depth=max_depth)
    try:
        node: Node | None = loader.get_single_node()
        data = loader.construct_document(node) if construct and node is not None else None
        return node, data
    finally:
        loader.dispose()


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, reading at most ``max_bytes + 1`` of them.

    Raises:
        StrictYAMLError: the file is larger than ``max_bytes`` (line 0).
        OSError: the file cannot be read.
    """
    with path.open("rb") as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StrictYAMLError(0, f"file is larger than {max_bytes} bytes; split it")
    return data

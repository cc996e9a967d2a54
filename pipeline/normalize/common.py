"""Helpers every normalizer shares: how reasons quote upstream values, the control-frame
signal, and the :class:`Family` record the registry keeps per upstream family.

Why one module: the five normalizers each carried their own copy of ``_quote``/``_kind``; a
reason must look the same whichever family wrote it (short, quoted, never the whole frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.models import CanonicalRecord, RawEnvelope

__all__ = ["QUOTE_MAX", "ControlFrame", "Family", "Parser", "json_kind", "quote"]

QUOTE_MAX = 40
"""Longest upstream text a reason quotes (cut with ``...``)."""


def json_kind(value: object) -> str:
    """JSON name of a parsed value's type (``null``, ``boolean``, ``number``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def quote(value: object) -> str:
    """Short form of an upstream value for a reason: text and numbers quoted (text cut at
    :data:`QUOTE_MAX` characters), anything else only named by its JSON kind."""
    if isinstance(value, str):
        if len(value) > QUOTE_MAX:
            value = value[: QUOTE_MAX - 3] + "..."
        return repr(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return f"({json_kind(value)})"


class ControlFrame(Exception):  # noqa: N818 - a control-flow signal, not an error (style §3)
    """Raised by a normalizer for a valid frame that holds no record (a pong, a heartbeat, a
    subscription confirmation, an empty array, a state that did not change...).

    Why a signal and not ``[]``: an empty result used to mean either "nothing to record" or
    "a branch forgot the frame", and the second was silently dropped. Now a frame ends as
    records, as a control frame counted under :attr:`kind`, or as a dead letter.

    Attributes:
        kind: short, fixed text naming what the frame was (``pong``, ``empty array``...);
            never upstream text, so it is safe as a metric label.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


Parser = Callable[[RawEnvelope, Any], list[CanonicalRecord]]
"""A family's parser: the envelope and its decoded JSON document -> records, or raises
:class:`~pipeline.errors.BadInputError` / :class:`ControlFrame`."""


@dataclass(frozen=True)
class Family:
    """One upstream family as the normalize step sees it.

    Attributes:
        name: ``RawEnvelope.source`` of its envelopes.
        parse: the family's parser (after the shared decoding, see
            :mod:`pipeline.normalize.decode`).
        control_texts: whole frames that are not JSON but valid control frames (ELEMENT's
            ``pong``), each with the control kind it counts as.
    """

    name: str
    parse: Parser
    control_texts: dict[str, str] = field(default_factory=dict)

    def normalize(self, envelope: RawEnvelope) -> list[CanonicalRecord]:
        """One frame through the shared decoding step and :attr:`parse`; ``[]`` for a
        control frame (each family module exports this as its ``normalize``).

        Raises:
            BadInputError: the frame is unusable.
        """
        from pipeline.normalize.decode import run

        return run(self, envelope).records

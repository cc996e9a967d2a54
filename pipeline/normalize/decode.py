"""The one decoding step every frame goes through before its family's parser.

Why here and not in each normalizer: binary frames (base64 text with
``meta["encoding"] == "base64"``, the envelope contract) were decoded by two families of five;
the others dead-lettered every binary frame. Now the registry decodes, checks the limits and
parses JSON once, so no family can forget a step:

1. ``meta["encoding"]``: absent -> the payload is the frame text; ``base64`` -> the payload
   is decoded and must be UTF-8 text; anything else is refused.
2. Size: at most :data:`MAX_FRAME_CHARS` characters of frame text.
3. Whole-frame control texts the family declares (ELEMENT's ``pong``) end here.
4. JSON: parsed with orjson (which refuses ``NaN``/``Infinity`` and numbers beyond a double);
   nesting deeper than :data:`MAX_JSON_DEPTH` is refused.
5. The family parser; its :class:`~pipeline.normalize.common.ControlFrame` becomes a counted
   control frame, an empty result without one a dead letter (it would be a silent drop).
6. Every measurement's value must be finite: a parser that lets ``NaN`` or an infinity
   through (some JSON parsers accept them, numeric strings can hold them) is refused with a
   reason, never passed to the rules, where NaN compares false with everything.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Final, NamedTuple

import orjson

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, RawEnvelope
from pipeline.normalize.common import ControlFrame, Family, json_kind, quote

__all__ = [
    "MAX_FRAME_CHARS",
    "MAX_JSON_DEPTH",
    "Normalized",
    "frame_text",
    "parse_json",
    "records_of",
    "run",
]

MAX_FRAME_CHARS: Final = 1_000_000
"""Longest frame text accepted (Kafka's default message limit is about 1 MB anyway)."""
MAX_JSON_DEPTH: Final = 64
"""Deepest JSON nesting accepted; documented frames nest fewer than ten levels."""
_CONTROL_TEXT_MAX = 64  # longest whole-frame control text looked up (``pong`` is 4)


class Normalized(NamedTuple):
    """What became of one frame: its records, or the control kind when it holds none.

    A named tuple, not a frozen dataclass: built once per frame on the hot path.
    """

    records: list[CanonicalRecord]
    control: str | None = None


def frame_text(envelope: RawEnvelope, family: str) -> str:
    """The frame as text: the payload, or its base64 decoding for binary frames.

    Raises:
        BadInputError: unknown ``meta.encoding``, invalid base64, binary that is not UTF-8,
            or a frame longer than :data:`MAX_FRAME_CHARS`.
    """
    payload = envelope.payload
    encoding = envelope.meta.get("encoding") if envelope.meta else None
    if encoding is not None:
        if encoding != "base64":
            raise BadInputError(
                f"{family} frame: unknown meta.encoding {quote(encoding)}; expected 'base64'"
            )
        if len(payload) > MAX_FRAME_CHARS * 4 // 3 + 4:
            raise BadInputError(f"{family} frame: longer than {MAX_FRAME_CHARS} characters")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadInputError(f"{family} frame: payload is not valid base64") from None
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError(
                f"{family} frame: binary frame is not UTF-8 text (byte {exc.start})"
            ) from None
    if len(payload) > MAX_FRAME_CHARS:
        raise BadInputError(f"{family} frame: longer than {MAX_FRAME_CHARS} characters")
    return payload


def parse_json(text: str, family: str) -> Any:
    """The frame's JSON document.

    Raises:
        BadInputError: not JSON (orjson refuses NaN, Infinity and numbers beyond a double),
            or nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadInputError(
            f"{family} frame: not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    # Cheap bound first: a frame with fewer brackets than the limit cannot nest deeper.
    if (
        len(text) > 2 * MAX_JSON_DEPTH
        and text.count("[") + text.count("{") > MAX_JSON_DEPTH
        and _deeper_than(document, MAX_JSON_DEPTH)
    ):
        raise BadInputError(f"{family} frame: JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether ``document`` nests more than ``limit`` arrays/objects (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def run(family: Family, envelope: RawEnvelope) -> Normalized:
    """Decode, parse and normalize one frame of ``family`` (see the module docstring).

    Raises:
        BadInputError: the frame is unusable; the reason names the family and the problem.
    """
    try:
        return Normalized(records_of(family, envelope))
    except ControlFrame as signal:
        return Normalized([], signal.kind)


def records_of(family: Family, envelope: RawEnvelope) -> list[CanonicalRecord]:
    """The records of one frame (the hot path: no result object per frame).

    Raises:
        BadInputError: the frame is unusable; the reason names the family and the problem.
        ControlFrame: the frame is a valid control frame; ``kind`` says which.
    """
    if envelope.meta:
        text = frame_text(envelope, family.name)
    else:  # a text frame: no decoding, only the size limit
        text = envelope.payload
        if len(text) > MAX_FRAME_CHARS:
            raise BadInputError(f"{family.name} frame: longer than {MAX_FRAME_CHARS} characters")
    if family.control_texts and len(text) <= _CONTROL_TEXT_MAX:
        control = family.control_texts.get(text)
        if control is not None:
            raise ControlFrame(control)
    document = parse_json(text, family.name)
    records = family.parse(envelope, document)
    if not records:
        kind = json_kind(document)
        article = "an" if kind[0] in "aeiou" else "a"
        raise BadInputError(
            f"{family.name} frame: {article} {kind} that yields no record "
            "and is no known control frame"
        )
    # One sum in C instead of a test per record: finite values have a finite sum unless it
    # overflows, and only then (or for a real NaN/infinity) is each value looked at.
    if not math.isfinite(sum([r.value for r in records if r.__class__ is Measurement])):
        for record in records:
            if isinstance(record, Measurement) and not math.isfinite(record.value):
                raise BadInputError(
                    f"{family.name} frame: {quote(record.metric)} of {quote(record.entity)} "
                    f"is not a finite number ({record.value!r})"
                )
    return records

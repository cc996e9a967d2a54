"""Normalizers: one pure parser per upstream family, raw envelope -> canonical records.

The registry is explicit (no discovery): adding a source means adding its module (with a
:class:`~pipeline.normalize.common.Family` and a catalogue entry in
:mod:`pipeline.normalize.catalogue`) and one line to :data:`FAMILIES`. Every frame first goes
through the shared decoding step (:mod:`pipeline.normalize.decode`: base64, size, JSON,
depth), then its family's parser, then the finite-number check. Normalizers never import
faust; they raise :class:`~pipeline.errors.BadInputError` for input they cannot use.

A frame ends in exactly one of three ways: records; a counted *control frame* (pong,
heartbeat, subscription confirmation, empty array, unchanged state: :func:`normalize_frame`
names the kind, :func:`normalize_envelope` returns ``[]`` for it); or a dead letter
(``BadInputError`` with the reason). Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, RawEnvelope
from pipeline.normalize import aliunid, element, hemis, nobil, valtronics
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.decode import Normalized, records_of
from producers.redact import redact_text

__all__ = [
    "FAMILIES",
    "NORMALIZERS",
    "Normalized",
    "Normalizer",
    "normalize_envelope",
    "normalize_envelope_or_signal",
    "normalize_frame",
]

Normalizer = Callable[[RawEnvelope], Sequence[CanonicalRecord]]

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (aliunid.FAMILY, nobil.FAMILY, element.FAMILY, valtronics.FAMILY, hemis.FAMILY)
}
"""Each upstream family, keyed by ``RawEnvelope.source``."""

NORMALIZERS: dict[str, Normalizer] = {
    "aliunid": aliunid.normalize,
    "nobil": nobil.normalize,
    "element": element.normalize,
    "valtronics": valtronics.normalize,
    "hemis": hemis.normalize,
}
"""Normalizer of each upstream family (decoding included), keyed by ``RawEnvelope.source``."""


def normalize_frame(envelope: RawEnvelope) -> Normalized:
    """Normalize an envelope: its records, or the control kind of a frame that holds none.

    Raises:
        BadInputError: no family for ``envelope.source``, or the frame is unusable; the
            reason is redacted (it may quote upstream values).
    """
    try:
        return Normalized(normalize_envelope_or_signal(envelope))
    except ControlFrame as signal:
        return Normalized([], signal.kind)


def normalize_envelope(envelope: RawEnvelope) -> Sequence[CanonicalRecord]:
    """The records of an envelope; ``[]`` only for a control frame (count it as one).

    Raises:
        BadInputError: as :func:`normalize_frame`.
    """
    try:
        return normalize_envelope_or_signal(envelope)
    except ControlFrame:
        return []


def normalize_envelope_or_signal(envelope: RawEnvelope) -> list[CanonicalRecord]:
    """The records of an envelope, or :class:`~pipeline.normalize.common.ControlFrame`.

    Raises:
        BadInputError: as :func:`normalize_frame`.
        ControlFrame: a valid frame without records.
    """
    family = FAMILIES.get(envelope.source)
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise BadInputError(
            redact_text(f"no normalizer for source {envelope.source!r}; known sources: {known}")
        )
    try:
        return records_of(family, envelope)
    except BadInputError as exc:
        # Reasons quote upstream values; a frame may carry a credential-looking one.
        masked = redact_text(exc.reason)
        if masked == exc.reason:
            raise
        raise BadInputError(masked) from None

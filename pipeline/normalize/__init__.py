"""Normalizers: one pure function per upstream family, raw envelope -> measurements.

The registry is explicit (no discovery): adding a source means adding its module and one line
to :data:`NORMALIZERS`. Normalizers never import faust; they raise
:class:`~pipeline.errors.BadInputError` for input they cannot use and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, RawEnvelope
from pipeline.normalize import aliunid, element, hemis, nobil, valtronics
from producers.redact import redact_text

__all__ = ["NORMALIZERS", "Normalizer", "normalize_envelope"]

Normalizer = Callable[[RawEnvelope], Sequence[CanonicalRecord]]

NORMALIZERS: dict[str, Normalizer] = {
    "aliunid": aliunid.normalize,
    "nobil": nobil.normalize,
    "element": element.normalize,
    "valtronics": valtronics.normalize,
    "hemis": hemis.normalize,
}
"""Normalizer of each upstream family, keyed by ``RawEnvelope.source``."""


def normalize_envelope(envelope: RawEnvelope) -> Sequence[CanonicalRecord]:
    """Normalize an envelope with the normalizer registered for its source.

    Raises:
        BadInputError: no normalizer for ``envelope.source``, or the frame is unusable.
    """
    normalizer = NORMALIZERS.get(envelope.source)
    if normalizer is None:
        known = ", ".join(sorted(NORMALIZERS))
        raise BadInputError(
            redact_text(f"no normalizer for source {envelope.source!r}; known sources: {known}")
        )
    try:
        return normalizer(envelope)
    except BadInputError as exc:
        # Reasons quote upstream values; a frame may carry a credential-looking one.
        masked = redact_text(exc.reason)
        if masked == exc.reason:
            raise
        raise BadInputError(masked) from None

"""The raw envelope: the only contract shared between producers and the pipeline.

A producer wraps every upstream frame, unchanged, in an envelope and writes it as JSON to
``raw.<kind>.v1``. The same JSON, one object per line, is the recording (JSONL) format used by
``streamwarden record`` and ``streamwarden replay``.

This module must never import faust or anything from ``pipeline``: producers run without them.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec


class RawEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One upstream frame plus where and when it was received.

    Attributes:
        source: the upstream family (``aliunid``, ``nobil``, ``valtronics``, ``element``,
            ``hemis``).
        stream: the configured source name (one upstream connection).
        received_at_ms: wall-clock epoch milliseconds when the producer received the frame.
        payload: the frame text exactly as received. Binary frames are base64 text with
            ``meta["encoding"] == "base64"``.
        meta: small, secret-free facts about the frame (connection number, encoding, ...).
    """

    source: str
    stream: str
    received_at_ms: int
    payload: str
    meta: dict[str, Any] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RawEnvelope)


def encode_envelope(envelope: RawEnvelope) -> bytes:
    """Serialize an envelope to compact JSON bytes (one line, no trailing newline)."""
    return _encoder.encode(envelope)


def decode_envelope(data: bytes | str) -> RawEnvelope:
    """Parse envelope JSON.

    Raises:
        msgspec.DecodeError / msgspec.ValidationError: the bytes are not a valid envelope
            (nesting too deep for msgspec included).
    """
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("envelope JSON nests too deep") from None


def raw_topic(kind: str) -> str:
    """Kafka topic that holds raw envelopes of one upstream family."""
    return f"raw.{kind}.v1"


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000

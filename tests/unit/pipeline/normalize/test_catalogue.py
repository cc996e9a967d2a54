"""The record catalogue: in step with docs/records.md, and true to what the normalizers emit."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline.models import Measurement, RawEnvelope
from pipeline.normalize import FAMILIES, normalize_envelope
from pipeline.normalize.catalogue import CATALOGUE, records_markdown

ROOT = Path(__file__).parents[4]
GOLDEN = ROOT / "tests" / "data" / "upstream"


def test_docs_records_md_is_generated_from_the_catalogue() -> None:
    committed = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")

    assert committed == records_markdown(), (
        "docs/records.md is out of date; run: "
        "python -m pipeline.normalize.catalogue > docs/records.md"
    )


def test_every_family_has_a_catalogue() -> None:
    assert list(CATALOGUE) == list(FAMILIES)


def golden_envelopes() -> list[tuple[str, RawEnvelope]]:
    out = []
    for path in sorted(GOLDEN.glob("*/*.json")):
        source = path.parent.name
        text = path.read_text(encoding="utf-8").strip()
        out.append((f"{source}/{path.name}", RawEnvelope(source, "s", 1, text, {})))
    return out


@pytest.mark.parametrize(("name", "envelope"), golden_envelopes(), ids=lambda v: str(v)[:40])
def test_every_golden_record_is_in_the_catalogue(name: str, envelope: RawEnvelope) -> None:
    """What a golden frame gives is declared: names, units, state values, label and
    annotation keys. A normalizer change that the catalogue misses fails here."""
    family = CATALOGUE[envelope.source]
    for record in normalize_envelope(envelope):
        if isinstance(record, Measurement):
            entry = family.metric(record.metric)
            assert entry is not None, f"{name}: metric {record.metric!r} not in the catalogue"
            if entry.unit:
                assert record.unit == entry.unit, f"{name}: {record.metric} unit"
        else:
            entry = family.state(record.name)
            assert entry is not None, f"{name}: state {record.name!r} not in the catalogue"
            if entry.values:
                assert record.value in entry.values, f"{name}: {record.name}={record.value}"
        assert set(record.labels) <= set(family.labels), f"{name}: labels {record.labels}"
        if "*" not in family.annotations:
            assert set(record.annotations) <= set(family.annotations), name


def test_control_frames_are_in_the_catalogue() -> None:
    frames = {
        "element": ["pong", "[]"],
        "valtronics": ['{"type": "pong"}', '{"type": "heartbeat"}'],
        "aliunid": ['{"type": "structure", "id": "x"}'],
    }
    from pipeline.normalize import normalize_frame

    for source, texts in frames.items():
        for text in texts:
            got = normalize_frame(RawEnvelope(source, "s", 1, text, {}))
            assert got.control in CATALOGUE[source].control_frames


def test_binary_golden_frames_are_catalogued_too() -> None:
    text = json.dumps({"type": "data", "id": "mp", "data": {"sys": {"kW": 1}}})
    payload = base64.b64encode(text.encode()).decode()
    (record,) = normalize_envelope(RawEnvelope("aliunid", "s", 1, payload, {"encoding": "base64"}))
    assert CATALOGUE["aliunid"].metric(record.metric) is not None

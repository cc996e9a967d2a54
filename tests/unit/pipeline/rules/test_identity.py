"""Alert identity (issue 14): one alert series per rule, entity and identity labels.

For every family, an incident whose records differ only in annotations, or in which
documented message type (or text vs binary frame) carried them, must fire and resolve exactly
once per episode: fire -> resolve -> fire -> resolve under one fingerprint. The scenarios run
through :func:`pipeline.replay.replay` (what ``streamwarden replay`` runs: the registry's
normalizers, then the rule engine) with rules loaded from YAML like a user's.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from pipeline.models import AlertTransition, RawEnvelope, StateEvent
from pipeline.normalize import normalize_envelope
from pipeline.replay import replay
from pipeline.rules.engine import RuleEngine, alert_fingerprint, decode_state
from pipeline.rules.loader import load_rules
from pipeline.rules.runtime import RuleRuntime
from pipeline.rules.state import IDENTITY_VERSION, AlertState
from streamwarden.cli import main

T0 = 1_764_000_000_000


def env(source: str, frame: Any, at_ms: int, *, binary: bool = False, **meta: Any) -> RawEnvelope:
    """An envelope as the producer writes it; ``binary`` = a binary WebSocket frame."""
    text = frame if isinstance(frame, str) else json.dumps(frame)
    if binary:
        meta["encoding"] = "base64"
        text = base64.b64encode(text.encode()).decode()
    return RawEnvelope(source, f"{source}-1", at_ms, text, meta)


def engine(tmp_path: Path, rules: str) -> RuleEngine:
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return RuleEngine(load_rules([path]))


def episodes(transitions: list[AlertTransition]) -> list[tuple[str, int]]:
    return [(t.state, t.ts_ms) for t in transitions]


def one_series(transitions: list[AlertTransition]) -> str:
    fingerprints = {t.fingerprint for t in transitions}
    assert len(fingerprints) == 1, transitions
    return fingerprints.pop()


# --- per family ---------------------------------------------------------------------------------


def test_valtronics_status_through_three_message_types_and_changing_reasons(
    tmp_path: Path,
) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - name: device-offline
    type: state
    match: {source: valtronics, state: status}
    equals: offline
    summary: "{{ entity }} {{ value }} ({{ annotations.reason | default('no reason') }})"
""",
    )
    t = [T0 + i * 60_000 for i in range(4)]
    frames = [
        env(
            "valtronics",
            {
                "type": "device_status_update",
                "device_id": 3,
                "old_status": "online",
                "new_status": "offline",
                "reason": "Connection lost",
                "timestamp": t[0] / 1000,
            },
            t[0],
        ),
        env(
            "valtronics",
            {
                "type": "device_update",
                "device_id": 3,
                "updates": {"status": "online"},
                "timestamp": t[1] / 1000,
            },
            t[1],
        ),
        env(
            "valtronics",
            {
                "type": "device_status",
                "device_id": 3,
                "status": "offline",
                "timestamp": t[2] / 1000,
            },
            t[2],
            binary=True,
        ),
        env(
            "valtronics",
            {
                "type": "device_status_update",
                "device_id": 3,
                "old_status": "offline",
                "new_status": "online",
                "reason": "Reconnected",
                "timestamp": t[3] / 1000,
            },
            t[3],
        ),
    ]

    result = replay(frames, rules)

    assert episodes(result.transitions) == [
        ("firing", t[0]),
        ("resolved", t[1]),
        ("firing", t[2]),
        ("resolved", t[3]),
    ]
    one_series(result.transitions)
    first = result.transitions[0]
    assert first.labels == {}
    assert first.annotations == {"reason": "Connection lost"}
    assert first.summary == "3 offline (Connection lost)"
    # Each transition describes the record that caused it.
    assert [t.annotations for t in result.transitions] == [
        {"reason": "Connection lost"},
        {},
        {},
        {"reason": "Reconnected"},
    ]


def test_a_deadline_announces_the_annotations_of_the_latest_record(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: offline-20s, type: state, match: {source: valtronics, state: status},
     equals: offline, for: 20s}
""",
    )

    def status(value: str, reason: str, at_ms: int) -> RawEnvelope:
        frame = {
            "type": "device_status_update",
            "device_id": 3,
            "new_status": value,
            "reason": reason,
            "timestamp": at_ms / 1000,
        }
        return env("valtronics", frame, at_ms)

    result = replay(
        [
            status("online", "Booted", T0),
            status("offline", "Lost", T0 + 1000),
            status("online", "Back", T0 + 60_000),
        ],
        rules,
    )

    assert [(t.state, t.ts_ms, t.annotations) for t in result.transitions] == [
        ("firing", T0 + 21_000, {"reason": "Lost"}),
        ("resolved", T0 + 60_000, {"reason": "Back"}),
    ]


def data_container(kind: str, nature: str, value: float, ts_ms: int) -> dict[str, Any]:
    return {
        "type": kind,
        "timestamp": ts_ms,
        "container": {
            "dataInfo": {
                "sourceTypeInfo": {
                    "sourceNature": nature,
                    "sourceGroup": "TMP",
                    "customPersistenceId": "",
                    "measurement": "TEMP",
                    "measurementUnit": "°C",
                },
                "zoneId": "Serveur",
                "sourceId": "S-1",
            },
            "data": {
                "header": {"columns_mapping": {"VALUENB": 0, "RELIABILITY": 1}},
                "data_points": [{"d": ts_ms, "v": [value, 0.9]}],
            },
        },
    }


def sensor_state(value: str, ts_ms: int) -> dict[str, Any]:
    return {
        "type": "SENSOR_STATE",
        "timestamp": ts_ms,
        "zoneId": "Serveur",
        "sensorId": "S-1",
        "factorId": "TMP",
        "itId": "IT-1",
        "valueType": "0",
        "value": value,
    }


def test_hemis_sensor_through_sensor_state_and_both_data_container_types(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: room-hot, type: threshold, match: {source: hemis, metric: sensor.TMP},
     condition: {op: ">", value: 28}}
""",
    )
    t = [T0 + i * 60_000 for i in range(4)]
    frames = [
        env("hemis", sensor_state("30.0", t[0]), t[0]),
        env("hemis", data_container("DATA_PROVIDER", "SEN", 20, t[1]), t[1], binary=True),
        env("hemis", data_container("NEW_DATA", "SENSOR", 31, t[2]), t[2]),
        env("hemis", sensor_state("21.0", t[3]), t[3], binary=True),
    ]

    result = replay(frames, rules)

    assert episodes(result.transitions) == [
        ("firing", t[0]),
        ("resolved", t[1]),
        ("firing", t[2]),
        ("resolved", t[3]),
    ]
    one_series(result.transitions)
    assert result.transitions[2].annotations["type"] == "NEW_DATA"
    assert result.transitions[2].annotations["sourceNature"] == "SENSOR"


def test_nobil_connector_error_through_snapshot_raw_and_update(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: connector-error, type: state, match: {source: nobil, state: error,
     entity: "NOR_00001/*"}, equals: error}
""",
    )
    changed_long_ago = T0 - 3 * 86_400_000
    t = [T0 + i * 60_000 for i in range(4)]

    def connector(error: int, ts: int) -> dict[str, Any]:
        return {"status": 0, "error": error, "timestamp": ts}

    frames = [
        env(
            "nobil",
            {
                "type": "snapshot:init",
                "data": [
                    {
                        "uuid": "NOR_00001",
                        "status": 2,
                        "connectors": [connector(1, changed_long_ago)],
                    }
                ],
            },
            t[0],
        ),
        env(
            "nobil",
            {
                "type": "status:raw",
                "data": {"uuid": "NOR_00001", "connector": 0, **connector(0, t[1])},
            },
            t[1],
            previous={"status": 0, "error": 1},
        ),
        env(
            "nobil",
            {
                "type": "status:update",
                "data": {"uuid": "NOR_00001", "status": 2, "connectors": [connector(1, t[2])]},
            },
            t[2],
            binary=True,
            previous={"status": 0, "connectors": [{"status": 0, "error": 0}]},
        ),
        env(
            "nobil",
            {
                "type": "status:raw",
                "data": {"uuid": "NOR_00001", "connector": 0, **connector(0, t[3])},
            },
            t[3],
            binary=True,
            previous={"status": 0, "error": 1},
        ),
    ]

    result = replay(frames, rules)

    # Fires at first sight (t0), not days earlier at the upstream change time.
    assert episodes(result.transitions) == [
        ("firing", t[0]),
        ("resolved", t[1]),
        ("firing", t[2]),
        ("resolved", t[3]),
    ]
    one_series(result.transitions)
    assert result.transitions[0].labels == {"station": "NOR_00001", "connector": "0"}
    assert result.transitions[0].annotations == {"changed_at": "2025-11-21T16:00:00Z"}


def element_reading(value: float, ts_ms: int, ident: str) -> dict[str, Any]:
    return {
        "event": "reading_added",
        "body": {
            "id": ident,
            "device_id": "dev-1",
            "measured_at": ts_ms / 1000,
            "data": {"air_temperature": value, "battery_voltage": 3.1},
        },
    }


def test_element_reading_through_live_frames_replay_batches_and_binary(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: too-warm, type: threshold, match: {source: element, metric: air_temperature},
     condition: {op: ">", value: 30}}
""",
    )
    t = [T0 + i * 60_000 for i in range(4)]
    frames = [
        env("element", [element_reading(31, t[0], "r0")], t[0]),
        env("element", [element_reading(25, t[1], "r1")], t[1], binary=True),
        env("element", "pong", t[1]),
        env("element", "[]", t[1], binary=True),
        env(
            "element",
            [element_reading(32, t[2], "r2"), element_reading(20, t[3], "r3")],
            t[3],
        ),
    ]

    result = replay(frames, rules)

    assert episodes(result.transitions) == [
        ("firing", t[0]),
        ("resolved", t[1]),
        ("firing", t[2]),
        ("resolved", t[3]),
    ]
    one_series(result.transitions)
    assert (result.dead_letters, result.control_frames) == (0, 2)


def test_aliunid_phase_is_identity_other_text_is_annotation(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: l1-overvoltage, type: threshold, match: {source: aliunid, metric: l1.V},
     condition: {op: ">", value: 250}}
""",
    )
    t = [T0 + i * 1000 for i in range(4)]

    def frame(volts: float, name: str) -> dict[str, Any]:
        return {
            "type": "data",
            "id": "mp-1",
            "data": {"l1": {"phase": "R", "V": volts, "name": name}},
        }

    frames = [
        env("aliunid", frame(260, "Meter A"), t[0]),
        env("aliunid", frame(230, "Meter A (renamed)"), t[1], binary=True),
        env("aliunid", frame(255, "Meter B"), t[2]),
        env("aliunid", frame(231, "Meter C"), t[3], binary=True),
    ]

    result = replay(frames, rules)

    assert episodes(result.transitions) == [
        ("firing", t[0]),
        ("resolved", t[1]),
        ("firing", t[2]),
        ("resolved", t[3]),
    ]
    one_series(result.transitions)
    assert result.transitions[0].labels == {"phase": "R"}
    assert result.transitions[0].annotations == {"name": "Meter A"}


# --- the rule's identity -------------------------------------------------------------------------


def valtronics_alert(alert_id: int, severity: str, ts_ms: int) -> RawEnvelope:
    return env(
        "valtronics",
        {
            "type": "alert",
            "alert_id": alert_id,
            "device_id": 1,
            "severity": severity,
            "alert_type": "threshold",
            "title": f"alert {alert_id}",
            "timestamp": ts_ms / 1000,
        },
        ts_ms,
    )


@pytest.mark.parametrize(
    ("identity", "series"),
    [("", 1), ("identity: [alert_id]", 2), ("identity: []", 1)],
)
def test_a_rule_may_name_its_identity_labels(tmp_path: Path, identity: str, series: int) -> None:
    rules = engine(
        tmp_path,
        f"""
rules:
  - name: critical-alerts
    type: state
    match: {{source: valtronics, state: alert.threshold}}
    equals: critical
    {identity}
""",
    )
    frames = [valtronics_alert(101, "critical", T0), valtronics_alert(102, "critical", T0 + 1000)]

    result = replay(frames, rules)

    assert len({t.fingerprint for t in result.transitions}) == series
    if series == 2:
        assert [t.labels for t in result.transitions] == [{"alert_id": "101"}, {"alert_id": "102"}]


def test_identity_leaves_unnamed_labels_as_annotations(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: per-meter, type: threshold, match: {source: aliunid, metric: l1.V},
     condition: {op: ">", value: 250}, identity: []}
""",
    )
    frame = {"type": "data", "id": "mp-1", "data": {"l1": {"phase": "R", "V": 260}}}

    (fired,) = replay([env("aliunid", frame, T0)], rules).transitions

    assert fired.labels == {}
    assert fired.annotations == {"phase": "R"}
    assert fired.fingerprint == alert_fingerprint("per-meter", "mp-1", {})


def test_match_labels_see_identity_labels_not_annotations(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - name: lost
    type: state
    match: {source: valtronics, state: status, labels: {reason: Connection lost}}
    equals: offline
""",
    )
    frame = {
        "type": "device_status_update",
        "device_id": 3,
        "new_status": "offline",
        "reason": "Connection lost",
    }

    assert replay([env("valtronics", frame, T0)], rules).transitions == []


# --- upgrade: state written before identity labels ----------------------------------------------


def legacy_alert_state(rule: str, rule_hash: int, labels: dict[str, str], since: int) -> bytes:
    """An entry exactly as the code before issue 14 wrote it (a six-field subject)."""
    subject = ["3", "valtronics", "valtronics-1", "status", "", labels]
    return msgspec.msgpack.encode(
        [
            "alert",
            rule,
            rule_hash,
            subject,
            ["firing", since, "offline", None, None],
            since,
            "offline",
            "online",
        ]
    )


def test_an_alert_firing_before_the_upgrade_still_resolves(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: device-offline, type: state, match: {source: valtronics, state: status},
     equals: offline}
""",
    )
    old_labels = {"reason": "Connection lost"}
    old_key = alert_fingerprint("device-offline", "3", old_labels)
    state = {
        old_key: decode_state(
            legacy_alert_state(
                "device-offline", rules.rule_hashes()["device-offline"], old_labels, T0
            )
        )
    }
    runtime = RuleRuntime(rules, state)
    runtime.rebuild(list(state.items()))
    back = StateEvent(
        "valtronics",
        "valtronics-1",
        "3",
        "status",
        "online",
        "offline",
        T0 + 60_000,
        {},
        {"reason": "Reconnected"},
    )

    assert runtime.advance(T0 + 1) == []  # the re-keying announces nothing
    moved = state[alert_fingerprint("device-offline", "3", {})]
    assert (moved.subject.labels, moved.subject.annotations) == ({}, old_labels)
    assert moved.subject.fingerprint == old_key

    out = runtime.process(back)

    assert [(t.state, t.fingerprint, t.ts_ms) for t in out] == [("resolved", old_key, T0 + 60_000)]
    assert out[0].annotations == {"reason": "Reconnected"}
    assert rules.counters["upgraded"] == 1
    new_key = alert_fingerprint("device-offline", "3", {})
    assert old_key not in state
    entry = state[new_key]
    assert isinstance(entry, AlertState)
    assert entry.subject.identity_version == IDENTITY_VERSION
    assert entry.subject.labels == {}
    assert entry.subject.annotations == {"reason": "Reconnected"}  # the latest record's


def test_two_old_series_merged_by_the_upgrade_leave_nothing_firing(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: device-offline, type: state, match: {source: valtronics, state: status},
     equals: offline}
""",
    )
    rule_hash = rules.rule_hashes()["device-offline"]
    keys = {}
    state = {}
    for reason, since in (("Connection lost", T0), ("Timeout", T0 + 1000)):
        labels = {"reason": reason}
        keys[reason] = alert_fingerprint("device-offline", "3", labels)
        state[keys[reason]] = decode_state(
            legacy_alert_state("device-offline", rule_hash, labels, since)
        )
    runtime = RuleRuntime(rules, state)
    runtime.rebuild(list(state.items()))

    merged = runtime.advance(T0 + 5000)
    back = runtime.process(
        StateEvent("valtronics", "valtronics-1", "3", "status", "online", None, T0 + 60_000)
    )

    assert [(t.state, t.fingerprint) for t in merged] == [("resolved", keys["Timeout"])]
    assert [(t.state, t.fingerprint) for t in back] == [("resolved", keys["Connection lost"])]
    assert rules.counters["merged"] == 1


def test_legacy_entries_whose_labels_were_all_identity_keep_their_key(tmp_path: Path) -> None:
    rules = engine(
        tmp_path,
        """
rules:
  - {name: connector-error, type: state, match: {source: nobil, state: error}, equals: error}
""",
    )
    labels = {"station": "NOR_00001", "connector": "0"}
    key = alert_fingerprint("connector-error", "NOR_00001/0", labels)
    subject = ["NOR_00001/0", "nobil", "nobil-1", "error", "", labels]
    raw = msgspec.msgpack.encode(
        [
            "alert",
            "connector-error",
            rules.rule_hashes()["connector-error"],
            subject,
            ["firing", T0, "error", None, None],
            T0,
            "error",
            "ok",
        ]
    )
    state = {key: decode_state(raw)}
    runtime = RuleRuntime(rules, state)
    runtime.rebuild(list(state.items()))

    out = runtime.process(
        StateEvent("nobil", "nobil-1", "NOR_00001/0", "error", "ok", "error", T0 + 1000, labels)
    )

    assert [(t.state, t.fingerprint) for t in out] == [("resolved", key)]
    assert list(state) in ([], [key])


# --- streamwarden replay, end to end --------------------------------------------------------------


def test_streamwarden_replay_prints_one_series(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {name: device-offline, type: state, match: {source: valtronics, "
        "state: status}, equals: offline}\n",
        encoding="utf-8",
    )
    recording = tmp_path / "rec.jsonl"
    lines = []
    for i, (status, reason) in enumerate(
        [
            ("offline", "Connection lost"),
            ("online", "Reconnected"),
            ("offline", "Power"),
            ("online", "Back"),
        ]
    ):
        frame = {
            "type": "device_status_update",
            "device_id": 7,
            "new_status": status,
            "reason": reason,
            "timestamp": (T0 + i * 1000) / 1000,
        }
        lines.append(msgspec.json.encode(env("valtronics", frame, T0 + i * 1000)).decode())
    recording.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = CliRunner().invoke(main, ["replay", "--rules", str(rules), "--input", str(recording)])

    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["state"] for o in out] == ["firing", "resolved", "firing", "resolved"]
    assert {o["fingerprint"] for o in out} == {alert_fingerprint("device-offline", "7", {})}
    assert result.stderr.strip().splitlines()[-1] == (
        "replayed 4 envelopes, 4 records: 4 transitions, 0 dead letters, 0 control frames, "
        "0 unreadable lines"
    )


def test_editing_a_rules_identity_keeps_its_firing_alert_resolvable(tmp_path: Path) -> None:
    """Changing ``identity`` changes every key; the alert fired under the old identity must
    still resolve (under its old fingerprint) once the runtime has visited the state."""
    before = engine(
        tmp_path,
        """
rules:
  - {name: l1-over, type: threshold, match: {source: aliunid, metric: l1.V},
     condition: {op: ">", value: 250}}
""",
    )
    state: dict[str, Any] = {}
    runtime = RuleRuntime(before, state)
    hot = {"type": "data", "id": "mp-1", "data": {"l1": {"phase": "R", "V": 260}}}
    cool = {"type": "data", "id": "mp-1", "data": {"l1": {"phase": "R", "V": 230}}}
    (fired,) = [t for r in normalize_envelope(env("aliunid", hot, T0)) for t in runtime.process(r)]
    after = before.reload(
        load_rules(
            [
                _write(
                    tmp_path,
                    "after.yaml",
                    """
rules:
  - {name: l1-over, type: threshold, match: {source: aliunid, metric: l1.V},
     condition: {op: ">", value: 250}, identity: []}
""",
                )
            ]
        )
    )
    runtime.set_engine(after)
    runtime.rebuild(list(state.items()))  # a start (or partition assignment) visits every entry

    out = [
        t for r in normalize_envelope(env("aliunid", cool, T0 + 1000)) for t in runtime.process(r)
    ]

    assert [(t.state, t.fingerprint) for t in out] == [("resolved", fired.fingerprint)]
    assert fired.labels == {"phase": "R"}
    assert out[0].labels == {} and out[0].annotations == {"phase": "R"}
    assert after.counters["rekeyed"] == 1


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_pre_upgrade_absence_alert_of_a_hemis_sensor_resolves(tmp_path: Path) -> None:
    """Hemis measurements used to carry ``type``/``zoneId``/``itId``/``factorId`` as labels,
    so every absence entry was keyed by them; the next reading (of any message type) must
    still resolve the silent-sensor alert that fired before the upgrade."""
    rules = engine(
        tmp_path,
        """
rules:
  - {name: sensor-silent, type: absence, match: {source: hemis, metric: sensor.TMP},
     after: 1m}
""",
    )
    old_labels = {"type": "SENSOR_STATE", "zoneId": "Serveur", "itId": "IT-1", "factorId": "TMP"}
    old_key = alert_fingerprint("sensor-silent", "S-1", old_labels)
    subject = ["S-1", "hemis", "hemis-1", "sensor.TMP", "°C", old_labels]
    raw = msgspec.msgpack.encode(
        [
            "absence",
            "sensor-silent",
            rules.rule_hashes()["sensor-silent"],
            subject,
            T0,
            21.0,
            T0 + 60_000,
        ]
    )
    state = {old_key: decode_state(raw)}
    runtime = RuleRuntime(rules, state)
    runtime.rebuild(list(state.items()))
    back = data_container("NEW_DATA", "SENSOR", 22.0, T0 + 120_000)

    out = [
        t
        for record in normalize_envelope(env("hemis", back, T0 + 120_000))
        for t in runtime.process(record)
    ]

    assert [(t.state, t.fingerprint) for t in out] == [("resolved", old_key)]
    assert rules.counters["upgraded"] == 1

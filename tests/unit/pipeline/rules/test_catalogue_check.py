"""``streamwarden rules check`` warns about rules that can match no record (issue 14).

Before, ``source: elemnt``, ``metric: air_temprature`` and ``state: eror`` all passed as
"N rules OK" and then never fired.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.errors import RuleProblem
from pipeline.rules.loader import load_rules
from streamwarden.cli import main

ROOT = Path(__file__).parents[4]

TYPOS = """\
rules:
  - name: typo-source
    type: threshold
    match: {source: elemnt, metric: air_temperature}
    condition: {op: ">", value: 30}
  - name: typo-metric
    type: threshold
    match:
      source: element
      metric: air_temprature
    condition: {op: ">", value: 30}
  - name: typo-state
    type: state
    match: {source: nobil, state: eror}
    equals: error
"""


def check(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "typos.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["rules", "check", str(path)])
    return result.exit_code, result.output.replace(str(tmp_path) + "/", "").splitlines()


def test_the_three_typos_of_the_issue_are_flagged_with_file_and_line(tmp_path: Path) -> None:
    code, lines = check(tmp_path, TYPOS)

    assert code == 0
    assert lines == [
        "typos.yaml:4: warning: rules[0].match.source: no normalizer emits source 'elemnt'; "
        "did you mean 'element'? (known sources: aliunid, element, hemis, nobil, valtronics)",
        "typos.yaml:10: warning: rules[1].match.metric: no element record has metric "
        "'air_temprature'; did you mean 'air_temperature'? (see docs/records.md)",
        "typos.yaml:14: warning: rules[2].match.state: no nobil record has state 'eror'; "
        "did you mean 'error'? (see docs/records.md)",
        "3 rules OK, 3 warnings",
    ]


def test_values_labels_and_identity_that_match_nothing(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """\
rules:
  - name: bad-value
    type: state
    match: {source: nobil, state: error}
    equals: eror
  - name: annotation-as-label
    type: state
    match:
      source: valtronics
      state: status
      labels: {reason: Connection lost}
    equals: offline
  - name: unknown-identity
    type: threshold
    match: {source: hemis, metric: sensor.TMP, labels: {zone: a}}
    condition: {op: ">", value: 28}
    identity: [zoneId, room]
""",
    )

    assert code == 0
    assert lines == [
        "typos.yaml:5: warning: rules[0].equals: state 'error' takes ok, error; 'eror' never "
        "occurs; did you mean 'error'?",
        "typos.yaml:11: warning: rules[1].match.labels.reason: 'reason' is an annotation of "
        "valtronics records, not an identity label; match.labels sees identity labels only",
        "typos.yaml:15: warning: rules[2].match.labels.zone: no hemis record has label 'zone' "
        "(its identity labels: none)",
        "typos.yaml:17: warning: rules[2].identity[1]: no hemis record has a label or "
        "annotation 'room' (see docs/records.md)",
        "3 rules OK, 4 warnings",
    ]


def test_without_source_a_name_no_family_emits_is_flagged(tmp_path: Path) -> None:
    _, lines = check(
        tmp_path,
        "rules:\n  - {name: any, type: absence, match: {metric: sys.kw}, after: 1m}\n",
    )

    assert lines[0] == (
        "typos.yaml:2: warning: rules[0].match.metric: no record of any source has metric "
        "'sys.kw'; did you mean 'sys.kW'? (see docs/records.md)"
    )


@pytest.mark.parametrize(
    "match",
    [
        "{source: hemis, metric: sensor.BRI}",
        "{source: hemis, metric: provider.TMP.VALUENB}",
        "{source: aliunid, metric: l2.kW, labels: {phase: S}}",
        "{source: element, metric: radio.rssi, labels: {gateway: '00AB'}}",
        "{metric: temperature}",
    ],
)
def test_names_the_catalogue_declares_pass(tmp_path: Path, match: str) -> None:
    code, lines = check(
        tmp_path,
        f"rules:\n  - {{name: ok, type: threshold, match: {match}, "
        "condition: {op: '>', value: 1}}\n",
    )

    assert (code, lines) == (0, ["1 rules OK"])


def test_the_shipped_example_rules_have_no_warning() -> None:
    warnings: list[RuleProblem] = []

    load_rules([ROOT / "rules"], warnings=warnings)

    assert warnings == []


def test_without_the_warnings_argument_loading_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "typos.yaml"
    path.write_text(TYPOS, encoding="utf-8")

    assert [r.name for r in load_rules([path])] == ["typo-source", "typo-metric", "typo-state"]

"""Rule loader: the invalid corpus, every problem at once, cross-file checks, valid examples."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.errors import RuleError
from pipeline.rules.loader import MAX_FILE_BYTES, load_rules
from pipeline.rules.schema import ThresholdRule

ROOT = Path(__file__).parents[4]
CORPUS = ROOT / "tests" / "data" / "rules" / "invalid"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
KNOWN_CHANNELS = ["email"]

VALID = """\
rules:
  - name: {name}
    type: threshold
    match: {{metric: sys.kW}}
    condition: {{op: ">", value: 40}}
    channels: [{channel}]
"""


def problems_of(paths: list[Path], known: list[str] | None = KNOWN_CHANNELS) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_rules(paths, known_channels=known)
    return str(caught.value).splitlines()


def relative(lines: list[str], base: Path) -> list[str]:
    return [line.replace(f"{base}/", "") for line in lines]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 12
    for case in CASES:
        assert (CORPUS / f"{case}.expected").is_file(), case


@pytest.mark.parametrize("case", CASES)
def test_invalid_corpus(case: str) -> None:
    expected = (CORPUS / f"{case}.expected").read_text(encoding="utf-8").splitlines()

    got = relative(problems_of([CORPUS / f"{case}.yaml"]), CORPUS)

    assert got == expected


@pytest.mark.parametrize("case", CASES)
def test_no_traceback_or_pydantic_wording(case: str) -> None:
    text = "\n".join(problems_of([CORPUS / f"{case}.yaml"]))

    for leak in ("Traceback", "pydantic", "errors.pydantic.dev", "Input should", "type=", "{'"):
        assert leak not in text


def test_multi_error_file_reports_every_problem_in_line_order() -> None:
    lines = relative(problems_of([CORPUS / "bad_values.yaml"]), CORPUS)

    assert len(lines) == 10
    numbers = [int(line.split(":")[1]) for line in lines]
    assert numbers == sorted(numbers)
    assert {line.split(": ")[1] for line in lines} >= {
        "rules[0].name",
        "rules[0].condition.value",
        "rules[0].severity",
        "rules[1].condition.value",
        "rules[1].channels",
    }


def test_every_file_is_reported_in_one_error(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "rules:\n  - name: x\n    type: threshold\n")
    second = write(tmp_path, "b.yaml", "rules: [\n")

    with pytest.raises(RuleError) as caught:
        load_rules([first, second])

    assert [(p.path, p.line, p.key) for p in caught.value.problems] == [
        (str(first), 2, "rules[0].match"),
        (str(first), 2, "rules[0].condition"),
        (str(second), 2, ""),
    ]


def test_duplicate_names_across_files_name_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID.format(name="dup", channel="console"))
    write(tmp_path, "b.yml", "\n\n" + VALID.format(name="dup", channel="console"))

    lines = relative(problems_of([tmp_path]), tmp_path)

    assert lines == [
        "b.yml:4: rules[0].name: 'dup' is already defined at a.yaml:2; rule names must be unique"
    ]


def test_unknown_channels_list_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", VALID.format(name="r", channel="pager"))

    lines = relative(problems_of([path], known=["email", "sms"]), tmp_path)

    assert lines == [
        "a.yaml:6: rules[0].channels[0]: unknown channel 'pager'; "
        "known channels are console, email, sms"
    ]


def test_channel_check_is_skipped_without_known_channels(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", VALID.format(name="r", channel="pager"))

    assert [r.name for r in load_rules([path])] == ["r"]


def test_console_channel_always_exists(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", VALID.format(name="r", channel="console"))

    assert [r.channels for r in load_rules([path], known_channels=())] == [["console"]]


def test_folder_loads_yaml_and_yml_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", VALID.format(name="second", channel="console"))
    write(tmp_path, "a.yaml", VALID.format(name="first", channel="console"))
    write(tmp_path, "c.txt", "not: rules")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "d.yaml", "broken: [")

    assert [r.name for r in load_rules([tmp_path])] == ["first", "second"]


def test_list_form_reads_like_mapping_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        "- name: r\n  type: threshold\n  match: {metric: m}\n  condition: {op: '<', value: 1}\n",
    )

    (loaded,) = load_rules([path])
    assert isinstance(loaded, ThresholdRule)
    assert loaded.condition.op == "<"


def test_missing_path_and_empty_folder_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    lines = relative(problems_of([tmp_path / "nope.yaml", tmp_path / "empty"]), tmp_path)

    assert lines == [
        "nope.yaml: no such file or folder",
        "empty: folder holds no *.yaml or *.yml rule files",
    ]


def test_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"rules:\n  - name: caf\xe9\n")

    assert relative(problems_of([path]), tmp_path) == [
        "a.yaml:2: not UTF-8 text; save the file as UTF-8"
    ]


def test_yaml_one_one_keys_stay_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        VALID.format(name="r", channel="console") + "    labels: {'on': 'yes', 1: x}\n",
    )

    (loaded,) = load_rules([path])
    assert loaded.labels == {"on": "yes", "1": "x"}


@pytest.mark.parametrize(
    ("scalar", "why"),
    [("on", "boolean"), ("010", "octal"), ("1:30", "base-60"), ("1_000", "YAML versions")],
)
def test_scalars_read_differently_by_yaml_1_1_and_1_2_are_refused(
    tmp_path: Path, scalar: str, why: str
) -> None:
    """Issue 16, defect 7: YAML 1.1 read ``010`` as 8 and ``1:30`` as 90, silently."""
    path = write(
        tmp_path,
        "a.yaml",
        VALID.format(name="r", channel="console") + f"    labels: {{team: {scalar}}}\n",
    )
    lines = problems_of([path])
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:") and f"'{scalar}' is ambiguous" in lines[0]
    assert why in lines[0]


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append("rules: *j")
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")

    started = time.perf_counter()
    problems = problems_of([path])
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0
    assert problems == [
        f"{path}:1: YAML anchor '&a' is not allowed; write the value out in full "
        "(anchors and aliases are refused)"
    ]


def test_aliases_are_refused_at_the_first_event(tmp_path: Path) -> None:
    """Issue 16, defect 7: 100 KB of ``- *x`` took 60 s to refuse (each alias was collected)."""
    text = "rules:\n" + "  - *x\n" * 20_000
    path = write(tmp_path, "aliases.yaml", text)
    started = time.perf_counter()
    problems = problems_of([path])
    assert time.perf_counter() - started < 2.0
    assert problems == [
        f"{path}:2: YAML alias '*x' is not allowed; write the value out in full "
        "(anchors and aliases are refused)"
    ]


def test_a_huge_rules_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """Issue 16, defect 9: a 4 GB rules file was read whole before the size check."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(4 * 1024**3)  # sparse: 4 GB that takes no disk
    problems = problems_of([path])
    assert problems == [f"{path}: file is larger than {MAX_FILE_BYTES} bytes; split it"]


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "rules: " + "[" * 5000 + "]" * 5000 + "\n")

    lines = problems_of([path])

    assert len(lines) == 1
    assert "nest" in lines[0]


def test_shipped_rules_load() -> None:
    rules = load_rules([ROOT / "rules"], known_channels=())

    names = [r.name for r in rules]
    assert "aliunid-power-high" in names
    (power,) = [r for r in rules if r.name == "aliunid-power-high"]
    assert power.match.source == "aliunid"
    assert power.match.metric == "sys.kW"
    assert power.condition.op == ">"
    assert power.for_.total_seconds() == 2
    assert power.clear is not None
    assert power.clear.condition is not None
    assert power.clear.condition.op == "<"
    assert power.severity == "warning"
    assert power.channels == ["console"]


def test_valid_examples_of_every_capability_load() -> None:
    from pipeline.rules.schema import AbsenceRule, AggregateRule, StateRule

    rules = {r.name: r for r in load_rules([ROOT / "tests" / "data" / "rules" / "valid"])}

    assert sorted(rules) == [
        "connector-error",
        "device-went-offline",
        "energy-rate",
        "hub-avg-power",
        "hub-peak-p95",
        "power-high",
        "sensor-silent",
        "voltage-band",
    ]
    assert isinstance(rules["hub-avg-power"], AggregateRule)
    assert rules["hub-avg-power"].grace.total_seconds() == 30
    assert isinstance(rules["sensor-silent"], AbsenceRule)
    connector = rules["connector-error"]
    assert isinstance(connector, StateRule)
    assert connector.match.entity == "NOR_*/*"

"""The rule loader against generated YAML: rules or a clear ``file:line`` message, nothing else.

For any file content, :func:`~pipeline.rules.loader.load_rules` either returns rules or raises
:class:`~pipeline.errors.RuleError` whose every line reads ``<path>:<line>: ...``; no other
exception, no traceback, no multi-line message. Inputs: arbitrary text, YAML-token soup,
arbitrary bytes, and rule documents built from strategies (dumped with PyYAML, then damaged
with anchors, aliases, tags, merge keys, duplicate keys, cuts). Alias bombs and 10k-deep
nesting are refused fast. ``streamwarden rules check`` prints the same lines and exits 0 or 1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import RuleError
from pipeline.rules.loader import MAX_NESTING, load_rules
from pipeline.rules.schema import ThresholdRule
from streamwarden.cli import main

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: A refused bomb or deep file must be answered well within this (seconds).
FAST_S = 2.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-rules")


def outcome(path: Path, known: list[str] | None = None) -> list[str] | int:
    """Load ``path``: the number of rules, or the problems as text (each checked for shape)."""
    try:
        rules = load_rules([path], known_channels=known)
    except RuleError as exc:
        error = exc
    else:
        return len(rules)
    assert error.problems, "a RuleError must carry at least one problem"
    shape = re.compile(rf"^{re.escape(str(path))}(:\d+)?: ")  # no line: the whole file
    shown = [str(problem) for problem in error.problems]
    for text in shown:
        assert shape.match(text), text
        assert "Traceback" not in text, text
    assert str(error) == "\n".join(shown)
    return shown


def load_text(folder: Path, text: str) -> list[str] | int:
    path = folder / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return outcome(path, known=["email"])


# --- arbitrary text ----------------------------------------------------------------------------

#: What PyYAML's reader refuses (the loader turns it into a problem, see the xfail below).
NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
printable_text = st.text(max_size=300).map(lambda t: NON_PRINTABLE.sub("", t))

YAML_TOKENS = [
    *"-:[]{},&*!|>'\"#%@`?\t\n ",
    "\n  ",
    "\n    ",
    "\n- ",
    "rules",
    "rules:",
    "name: a",
    "type: threshold",
    "match:",
    "metric: sys.kW",
    "condition:",
    "op: '>'",
    "value: 40",
    "for: 5m",
    "channels: [console]",
    "&a",
    "*a",
    "<<: *a",
    "!!python/object:os.system",
    "!!binary",
    "!custom",
    "---",
    "...",
    "%YAML 1.1",
    "yes",
    "~",
    "1e400",
    "0x1F",
    "2024-01-01",
    "{{ x }}",
    "{% for %}",
    "\u2028",
    "\x85",
    "\ufeff",
    "é",
]
yaml_soup = st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join)


@FUZZ
@given(text=printable_text)
def test_any_printable_text(folder: Path, text: str) -> None:
    load_text(folder, text)


@FUZZ
@given(text=yaml_soup)
def test_yaml_token_soup(folder: Path, text: str) -> None:
    load_text(folder, text)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_that_are_not_utf8(folder: Path, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        data = b"\xff" + data
    path = folder / "bytes.yaml"
    path.write_bytes(data)
    problems = outcome(path)
    assert isinstance(problems, list)
    assert problems[0].endswith(": not UTF-8 text; save the file as UTF-8")


@pytest.mark.parametrize("text", ["\x00", "rules: []\n\x08\n", "name: \x1b[31m\n"])
def test_non_printable_characters_are_a_problem_not_a_crash(folder: Path, text: str) -> None:
    problems = load_text(folder, text)
    assert isinstance(problems, list)
    assert "invalid character" in problems[0]


def test_every_problem_is_one_line(folder: Path) -> None:
    problems = load_text(folder, 'rules:\n  - {name: "a\\nb", type: threshold}\n')
    assert isinstance(problems, list)
    assert all("\n" not in problem for problem in problems), problems


# --- structured documents ----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
anything = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
durations = (
    st.sampled_from(["0s", "30s", "5m", "1h", "2d", "-1s", "5 minutes", "1e9h", ""]) | anything
)
ops = st.sampled_from([">", ">=", "<", "<=", "==", "!=", "inside", "outside", "~", "in"]) | anything
conditions = (
    st.fixed_dictionaries(
        {},
        optional={
            "op": ops,
            "value": scalars,
            "low": scalars,
            "high": scalars,
            "values": st.lists(scalars, max_size=3),
        },
    )
    | anything
)
templates = st.sampled_from(
    [
        "{{ entity }} {{ value }}",
        "{{ value | round(1) }}",
        "{% if %}",
        "{{ ''.__class__ }}",
        "{{ x",
        "{{ 9 ** 9 ** 9 }}",
    ]
) | st.text(max_size=30)
rule = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["r1", "r2", "power-high"]) | st.text(max_size=12) | anything,
        "type": st.sampled_from(["threshold", "aggregate", "absence", "state", "nope"]) | anything,
        "match": st.dictionaries(
            st.sampled_from(["source", "metric", "entity", "stream", "labels", "nope"]),
            scalars | st.dictionaries(st.text(max_size=4), scalars, max_size=2),
            max_size=4,
        )
        | anything,
        "condition": conditions,
        "for": durations,
        "clear": st.fixed_dictionaries({}, optional={"condition": conditions, "for": durations})
        | anything,
        "window": st.fixed_dictionaries(
            {},
            optional={
                "kind": st.sampled_from(["tumbling", "hopping", "sliding", "x"]) | anything,
                "size": durations,
                "hop": durations,
            },
        )
        | anything,
        "aggregate": st.sampled_from(["avg", "max", "count", "rate", "p95"])
        | st.fixed_dictionaries({"percentile": scalars})
        | anything,
        "after": durations,
        "severity": st.sampled_from(["info", "warning", "critical", "page"]) | anything,
        "summary": templates,
        "description": templates,
        "labels": st.dictionaries(st.text(max_size=6), scalars, max_size=3) | anything,
        "channels": st.lists(st.sampled_from(["console", "email", "nope"]), max_size=3) | anything,
        "extra_key": anything,
    },
)
documents = (
    st.fixed_dictionaries({"rules": st.lists(rule | anything, max_size=4)})
    | st.lists(rule, max_size=3)
    | st.dictionaries(st.sampled_from(["rules", "rule", "version"]), anything, max_size=2)
    | anything
)


def _damage(text: str, kind: str, at: int) -> str:
    """One kind of YAML trouble applied at a position derived from ``at``."""
    lines = text.split("\n")
    i = at % max(len(lines), 1)
    if kind == "none":
        return text
    if kind == "cut":
        return text[: at % (len(text) + 1)]
    if kind == "anchor":
        lines[i] = lines[i].replace(": ", ": &x ", 1)
        return "\n".join(lines) + "\nalias: *x\n"
    if kind == "alias":
        return "base: &b {name: x}\n" + text.replace("name:", "<<: *b\n  name:", 1)
    if kind == "tag":
        lines[i] = lines[i].replace(": ", ": !!python/name:os.system ", 1)
        return "\n".join(lines)
    if kind == "duplicate":
        lines.insert(i, lines[i])
        return "\n".join(lines)
    if kind == "tab":
        lines[i] = "\t" + lines[i]
        return "\n".join(lines)
    if kind == "documents":
        return text + "\n---\n" + text
    raise AssertionError(kind)


DAMAGE = ["none", "cut", "anchor", "alias", "tag", "duplicate", "tab", "documents"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=documents,
    flow=st.booleans(),
    damage=st.sampled_from(DAMAGE),
    at=st.integers(min_value=0, max_value=10_000),
)
def test_generated_rule_documents(
    folder: Path, document: Any, flow: bool, damage: str, at: int
) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    load_text(folder, _damage(text, damage, at))


def test_a_valid_generated_document_loads(folder: Path) -> None:
    """The generator's happy path is reachable: a hand-picked draw loads as a rule."""
    document = {
        "rules": [
            {
                "name": "power-high",
                "type": "threshold",
                "match": {"metric": "sys.kW"},
                "condition": {"op": ">", "value": 40},
                "for": "5m",
                "channels": ["console", "email"],
            }
        ]
    }
    assert load_text(folder, yaml.safe_dump(document)) == 1
    (rule,) = load_rules([folder / "fuzz.yaml"], known_channels=["email"])
    assert isinstance(rule, ThresholdRule)


# --- bombs and depth ---------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        refs = ", ".join([f"*a{n - 1}"] * 9)
        lines.append(f"a{n}: &a{n} [{refs}]")
    lines.append(f"rules: *a{levels}")
    return "\n".join(lines) + "\n"


def timed(folder: Path, text: str) -> tuple[list[str], float]:
    started = time.perf_counter()
    got = load_text(folder, text)
    elapsed = time.perf_counter() - started
    assert isinstance(got, list), "must be refused"
    return [line.split(": ", 1)[1] for line in got], elapsed


def test_billion_laughs_is_refused_fast_without_expanding(folder: Path) -> None:
    problems, elapsed = timed(folder, billion_laughs())  # 9**10 'lol's if expanded
    assert elapsed < FAST_S
    assert problems == [
        "YAML anchor '&a0' is not allowed; write the value out in full (anchors and "
        "aliases are refused)"
    ]  # refused at the first event, nothing composed from it


def test_an_alias_as_a_mapping_key_is_refused(folder: Path) -> None:
    problems, _ = timed(folder, "k: &k name\nrules:\n  - {*k : x}\n")
    assert any("YAML anchor '&k' is not allowed" in p for p in problems)
    problems, _ = timed(folder, "rules:\n  - {*k : x}\n")
    assert any("YAML alias '*k' is not allowed" in p for p in problems)


def nested_flow(depth: int) -> Iterator[tuple[str, str]]:
    yield "lists", "rules: " + "[" * depth + "]" * depth + "\n"
    yield "mappings", "rules: " + "{a: " * depth + "1" + "}" * depth + "\n"
    yield "mixed", "rules: [" + "{a: [" * depth + "]}" * depth + "]\n"


@pytest.mark.parametrize("depth", [MAX_NESTING + 5, 400, 10_000])
def test_deep_flow_nesting_is_refused_fast_with_a_clear_message(folder: Path, depth: int) -> None:
    for shape, text in nested_flow(depth):
        problems, elapsed = timed(folder, text)
        assert elapsed < FAST_S, shape
        assert len(problems) <= 2, (shape, problems)
        assert any(
            p == f"YAML nests too deep; use at most {MAX_NESTING} levels"
            or p.endswith(f": nesting deeper than {MAX_NESTING} levels is not allowed")
            for p in problems
        ), (shape, problems)


def test_deep_block_nesting_is_refused_with_the_key_path(folder: Path) -> None:
    depth = 200
    text = "rules:\n  - name: deep\n    labels:\n" + "".join(
        f"{'  ' * (n + 3)}k{n}:\n" for n in range(depth)
    )
    problems, elapsed = timed(folder, text)
    assert elapsed < FAST_S
    # refused while composing, at the first mapping deeper than the limit
    assert problems == [f"YAML nests too deep; use at most {MAX_NESTING} levels"]


def test_10k_deep_block_nesting_is_refused_by_size(folder: Path) -> None:
    depth = 10_000
    text = "rules:\n" + "".join(f"{' ' * (n + 1)}k:\n" for n in range(depth))
    assert len(text) > 1_000_000
    problems, elapsed = timed(folder, text)
    assert elapsed < FAST_S
    assert problems == ["file is larger than 1000000 bytes; split it"]


# --- the CLI -----------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents, damage=st.sampled_from(DAMAGE), at=st.integers(0, 1000))
def test_rules_check_exits_0_or_1_and_never_prints_a_traceback(
    folder: Path, document: Any, damage: str, at: int
) -> None:
    path = folder / "cli.yaml"
    path.write_text(_damage(yaml.safe_dump(document), damage, at), encoding="utf-8")
    result = CliRunner().invoke(
        main, ["rules", "check", str(path)], env={"STREAMWARDEN_CHANNELS_FILE": ""}
    )
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    expected = outcome(path, known=[])  # the CLI knows only the built-in channel here
    if isinstance(expected, int):
        assert result.exit_code == 0
        assert result.stdout == f"{expected} rules OK\n"
    else:
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == "\n".join(expected) + "\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bomb", billion_laughs()),
        ("deep", "rules: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ("tag", "rules:\n  - !!python/object/apply:os.system ['echo pwned']\n"),
    ],
)
def test_rules_check_refuses_hostile_files_cleanly(folder: Path, name: str, text: str) -> None:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["rules", "check", str(path)], env={"STREAMWARDEN_CHANNELS_FILE": ""}
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.rstrip("\n").split("\n")
    assert lines and all(re.match(rf"^{re.escape(str(path))}(:\d+)?: \S", line) for line in lines)
    assert "Traceback" not in result.stderr

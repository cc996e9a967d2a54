"""The sources file: parsing, ${VAR} expansion, every error at once, secrets kept out."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

import pytest
from pydantic import Field, SecretStr

from producers.config import (
    AliunidSource,
    SourceBase,
    _source_models,
    find_source,
    load_sources,
    secrets_of,
    source_kinds,
)
from producers.errors import SourceConfigError, SourceProblem
from producers.sources.common import websocket_options
from producers.sources.hemis import endpoint
from tests.support.secrets import register_secret

API_KEY = register_secret("sk-live-7f3a9c1e5b2d")
BUSINESS = "9bf32959-1fd4-4fa4-83e0-9e9cd80093af"
MP1 = "e113fba4-9a5d-4ae9-aba9-b92b5b7ddf34"
MP2 = "957f7b09-af00-4b59-b708-e06ae28f7bbb"
ENV = {"ALIUNID_API_KEY": API_KEY, "ALIUNID_BUSINESS_ID": BUSINESS}
LIVE = "ws://127.0.0.1:8765/web/api/data-export/v1/businesses/${ALIUNID_BUSINESS_ID}/measuring-points/live"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SourceConfigError) as info:
        load_sources(path, ENV if env is None else env)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


def test_valid_file_is_expanded_and_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        sources:
          - name: aliunid-demo              # unique
            kind: aliunid
            url: {LIVE}
            api_key: ${{ALIUNID_API_KEY}}
            measuring_points: [{MP1}, {MP2}]
            ping_interval: 20
            open_timeout: 500ms
            idle_timeout: null
            stable_after: 1m
            backoff_initial: 0.25
            backoff_max: 1h
            max_frame_bytes: 2048
          - name: second
            kind: aliunid
            url: wss://operator.aliunid.com/live
            api_key: literal-key-1
        """,
    )
    sources = load_sources(path, ENV)
    assert [s.name for s in sources] == ["aliunid-demo", "second"]
    demo = sources[0]
    assert isinstance(demo, AliunidSource)
    assert demo.kind == "aliunid"
    assert demo.url == LIVE.replace("${ALIUNID_BUSINESS_ID}", BUSINESS)
    assert isinstance(demo.api_key, SecretStr)
    assert demo.api_key.get_secret_value() == API_KEY
    assert demo.measuring_points == (UUID(MP1), UUID(MP2))
    assert demo.ping_interval == 20.0
    assert demo.open_timeout == 0.5
    assert demo.idle_timeout is None
    assert demo.stable_after == 60.0
    assert demo.backoff_initial == 0.25
    assert demo.backoff_max == 3600.0
    assert demo.max_frame_bytes == 2048


def test_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - {name: a, kind: aliunid, url: "ws://h/live", api_key: "abcd1234"}
        """,
    )
    (source,) = load_sources(path, {})
    assert source.measuring_points == ()
    assert source.ping_interval is None  # aliunid's docs do not say pings are allowed
    assert source.open_timeout == 10.0
    assert source.idle_timeout == 300.0
    assert source.stable_after == 10.0
    assert source.backoff_initial == 0.5
    assert source.backoff_max == 30.0
    assert source.max_frame_bytes == 1024 * 1024
    assert source.tls_verify is True
    assert source.tls_insecure_acknowledged is False


def test_tls_verify_can_be_turned_off_only_when_acknowledged(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - name: a
            kind: aliunid
            url: wss://h/live
            api_key: abcd1234
            tls_verify: false
            tls_insecure_acknowledged: true
          - name: h
            kind: hemis
            url: wss://hemis.example/ws
            building_id: b1
            token: t0ken-value
            tls_verify: false
            tls_insecure_acknowledged: true
        """,
    )
    aliunid, hemis = load_sources(path, {})
    assert (aliunid.tls_verify, aliunid.tls_insecure_acknowledged) == (False, True)
    assert websocket_options(aliunid).tls_verify is False
    assert endpoint(hemis).tls_verify is False


def test_environment_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_TEST_KEY", "from-the-environment")
    path = write(
        tmp_path,
        """
        sources:
          - {name: a, kind: aliunid, url: "ws://h/live", api_key: "${SW_TEST_KEY}"}
        """,
    )
    (source,) = load_sources(path)
    assert source.api_key.get_secret_value() == "from-the-environment"


def test_missing_variable_names_file_line_entry_and_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        sources:
          - name: aliunid-demo
            kind: aliunid
            api_key: ${{ALIUNID_API_KEY}}
            url: {LIVE}
        """,
    )
    assert problems_of(path, {"ALIUNID_BUSINESS_ID": BUSINESS}) == [
        f"{path}:4: source 'aliunid-demo': api_key: "
        "environment variable ALIUNID_API_KEY is not set",
    ]


def test_every_problem_of_every_entry_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        sources:
          - name: aliunid-demo
            kind: aliunid
            url: {LIVE}
            api_key: ${{ALIUNID_API_KEY}}
            measuring_points: [{MP1}, not-a-uuid]
            ping_interval: 5 minutes
          - name: other
            kind: zigbee
          - kind: aliunid
            url: http://example.com/live
            api_key: 12345
            apikey: typo
            backoff_initial: 10
            backoff_max: 1s
          - name: aliunid-demo
            kind: aliunid
            url: ws://h/live?apiKey=inline-secret-value
            api_key: ""
          - 5
        """,
    )
    assert problems_of(path, {"ALIUNID_BUSINESS_ID": BUSINESS}) == [
        f"{path}:5: source 'aliunid-demo': api_key: environment variable ALIUNID_API_KEY "
        "is not set",
        f"{path}:6: source 'aliunid-demo': measuring_points[1]: expected a measuring point UUID "
        "(got 'not-a-uuid')",
        f"{path}:7: source 'aliunid-demo': ping_interval: '5 minutes' is not a duration; use "
        "seconds (e.g. 30) or forms like 30s, 5m, 1h, 1h30m, 500ms, 2d",
        f"{path}:9: source 'other': kind: unknown source kind 'zigbee'; known kinds: "
        + ", ".join(source_kinds()),
        f"{path}:10: sources[2]: name: required key is missing",
        f"{path}:11: sources[2]: url: 'http://example.com/live' is not a WebSocket URL; use "
        "ws://host/path or wss://host/path",
        f"{path}:12: sources[2]: api_key: expected a string, got a number; quote the value in YAML",
        f"{path}:13: sources[2]: apikey: unknown key; allowed keys: api_key, api_key_in, "
        "backoff_initial, backoff_max, error_delay, idle_timeout, kind, max_frame_bytes, "
        "measuring_points, name, open_timeout, ping_interval, poll_timeout, stable_after, "
        "tls_insecure_acknowledged, tls_verify, transport, url",
        f"{path}:15: sources[2]: backoff_max: must be at least backoff_initial (10s), got 1s",
        f"{path}:16: source 'aliunid-demo': name: duplicate source name; first defined at line 2",
        f"{path}:18: source 'aliunid-demo': url: 'ws://h/live?apiKey=***' must not have a query "
        "string or fragment; put the key in api_key and measuring point ids in measuring_points",
        f"{path}:19: source 'aliunid-demo': api_key: must not be empty",
        f"{path}:20: sources[4]: expected a mapping (name: ..., kind: ...), got a number",
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{name: a, url: 'ws://h/l', api_key: abcd}",
            "2: source 'a': kind: required key is missing; known kinds: "
            + ", ".join(source_kinds()),
        ),
        (
            "{name: 'a b', kind: aliunid, url: 'ws://h/l', api_key: abcd}",
            "2: source 'a b': name: must be 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit (got 'a b')",
        ),
        (
            "{name: a, kind: aliunid, api_key: abcd}",
            "2: source 'a': url: required key is missing",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, open_timeout: 0}",
            "2: source 'a': open_timeout: must be greater than 0 (got 0)",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, open_timeout: true}",
            "2: source 'a': open_timeout: True is not a duration; use seconds (e.g. 30) or forms "
            "like 30s, 5m, 1h, 1h30m, 500ms, 2d",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, max_frame_bytes: 0}",
            "2: source 'a': max_frame_bytes: must be at least 1 (got 0)",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, max_frame_bytes: 1MiB}",
            "2: source 'a': max_frame_bytes: '1MiB' is not a whole number",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, measuring_points: x}",
            "2: source 'a': measuring_points: expected a list, got a string",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/${1BAD}', api_key: abcd}",
            "2: source 'a': url: '${1BAD}' is not a variable reference; use ${NAME} with letters, "
            "digits and _",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/${OPEN', api_key: abcd}",
            "2: source 'a': url: unterminated '${'; use ${NAME}",
        ),
        (
            "{name: a, kind: aliunid, url: 'ws://h/l', api_key: '${EMPTY}'}",
            "2: source 'a': api_key: environment variable EMPTY is empty",
        ),
        (
            "{name: a, kind: aliunid, url: 'wss://h/l', api_key: abcd, tls_verify: false}",
            "2: source 'a': tls_verify: false turns off TLS certificate and hostname checks "
            "(anyone on the path can read the credentials); set tls_insecure_acknowledged: true "
            "as well if you really mean it",
        ),
        (
            "{name: a, kind: aliunid, url: 'wss://h/l', api_key: abcd, tls_verify: false, "
            "tls_insecure_acknowledged: false}",
            "2: source 'a': tls_verify: false turns off TLS certificate and hostname checks "
            "(anyone on the path can read the credentials); set tls_insecure_acknowledged: true "
            "as well if you really mean it",
        ),
        (
            "{name: a, kind: aliunid, url: 'wss://h/l', api_key: abcd, tls_verify: 'off'}",
            "2: source 'a': tls_verify: expected true or false (got 'off')",
        ),
        (
            "{name: a, kind: element, url: 'ws://h', api_key: abcd, scope: foo, scope_id: s}",
            "2: source 'a': scope: must be one of 'device', 'tag', 'stream', 'mandate' (got 'foo')",
        ),
    ],
)
def test_entry_errors_have_exact_messages(tmp_path: Path, entry: str, expected: str) -> None:
    path = write(tmp_path, f"sources:\n  - {entry}\n")
    assert problems_of(path, {"EMPTY": ""}) == [f"{path}:{expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [": the file is empty; expected a mapping with a 'sources' list"]),
        ("- a\n- b\n", [":1: expected a mapping with a 'sources' list at the top level"]),
        (
            "other: 1\n",
            [
                ":1: unknown top-level key 'other'; expected 'sources'",
                ":1: sources: required key is missing",
            ],
        ),
        ("sources: {a: 1}\n", [":1: sources: expected a list of source entries"]),
        ("sources: []\n", [":1: sources: the list is empty; define at least one source"]),
        (
            "sources:\n  - name: [unclosed\n",
            [":3: invalid YAML: expected ',' or ']', but got '<stream end>'"],
        ),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    assert problems_of(path) == [f"{path}{e}" for e in expected]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - name: a
            kind: aliunid
            url: ws://h/one
            api_key: abcd1234
            url: ws://h/two
        """,
    )
    assert problems_of(path) == [f"{path}:6: source 'a': url: duplicate key; first given at line 4"]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(SourceConfigError) as info:
        load_sources(path, {})
    assert str(info.value) == f"{path}: cannot read the sources file: No such file or directory"


def test_secrets_never_appear_in_errors_or_reprs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - {name: good, kind: aliunid, url: "ws://h/live", api_key: "${ALIUNID_API_KEY}"}
        """,
    )
    (good,) = load_sources(path, ENV)
    for text in (str(good), repr(good), str(good.model_dump()), good.model_dump_json()):
        assert API_KEY not in text

    secret = "inline-secret-value-42"
    path = write(
        tmp_path,
        f"""
        sources:
          - name: bad
            kind: aliunid
            url: ws://h/live?apiKey={secret}
            api_key: [{secret}]
            unknown_key: {secret}
          - name: short
            kind: aliunid
            url: ws://h/live
            api_key: ${{ALIUNID_API_KEY}}
            open_timeout: -1
        """,
    )
    with pytest.raises(SourceConfigError) as info:
        load_sources(path, ENV)
    error = info.value
    assert [p.key for p in error.problems] == ["url", "api_key", "unknown_key", "open_timeout"]
    for text in (str(error), repr(error), repr(error.problems)):
        assert secret not in text
        assert API_KEY not in text
    # Validating the model directly hides the input too.
    with pytest.raises(ValueError, match="api_key") as direct:
        AliunidSource(name="x", kind="aliunid", url="ws://h/l", api_key=[secret])
    assert secret not in str(direct.value)


def test_secrets_of_gives_raw_and_url_encoded_forms() -> None:
    source = AliunidSource(name="a", kind="aliunid", url="ws://h/l", api_key="k/y+z=1&2 3")
    assert secrets_of(source) == ["k/y+z=1&2 3", "k%2Fy%2Bz%3D1%262%203", "k%2Fy%2Bz%3D1%262+3"]
    plain = AliunidSource(name="a", kind="aliunid", url="ws://h/l", api_key="plainkey")
    assert secrets_of(plain) == ["plainkey"]


def test_find_source_returns_the_named_source_or_lists_known_names() -> None:
    a = AliunidSource(name="a", kind="aliunid", url="ws://h/l", api_key="abcd")
    b = AliunidSource(name="b", kind="aliunid", url="ws://h/l", api_key="abcd")
    assert find_source([a, b], "b") is b
    with pytest.raises(SourceConfigError) as info:
        find_source([a, b], "c")
    assert str(info.value) == "no source named 'c'; known sources: 'a', 'b'"
    with pytest.raises(SourceConfigError, match=r"known sources: none$"):
        find_source([], "c")


def test_source_kinds_lists_the_union_members() -> None:
    assert "aliunid" in source_kinds()
    assert list(source_kinds()) == sorted(source_kinds())


def test_a_second_kind_is_found_in_a_union_alias() -> None:
    class OtherSource(SourceBase):
        kind: Literal["other"]

    alias = Annotated[AliunidSource | OtherSource, Field(discriminator="kind")]
    assert _source_models(alias) == (AliunidSource, OtherSource)
    assert _source_models(Annotated[AliunidSource, Field(discriminator="kind")]) == (AliunidSource,)


def test_problem_formatting() -> None:
    assert (
        str(SourceProblem("f.yaml", 3, "source 'a'", "url", "bad"))
        == "f.yaml:3: source 'a': url: bad"
    )
    assert str(SourceProblem("f.yaml", None, "", "", "empty")) == "f.yaml: empty"
    assert str(SourceConfigError("plain message")) == "plain message"


TWO_SOURCES = """
sources:
  - name: first
    kind: aliunid
    url: ws://h/l
    api_key: ${FIRST_KEY}
  - name: second
    kind: aliunid
    url: ws://h/l
    api_key: ${SECOND_KEY}
"""


def test_running_one_source_needs_only_its_own_variables(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_SOURCES)
    (only,) = load_sources(path, {"SECOND_KEY": API_KEY}, only="second")
    assert only.name == "second"
    assert find_source([only], "second") is only
    assert problems_of(path, {"SECOND_KEY": API_KEY}) == [
        f"{path}:5: source 'first': api_key: environment variable FIRST_KEY is not set"
    ]


def test_other_sources_are_still_checked_and_all_problems_come_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_SOURCES.replace(
            "url: ws://h/l\n    api_key: ${FIRST_KEY}",
            "url: ftp://h\n    api_key: ${FIRST_KEY}\n    colour: red",
        ),
    )
    with pytest.raises(SourceConfigError) as info:
        load_sources(path, {"SECOND_KEY": API_KEY}, only="second")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4: source 'first': url: ")
    assert lines[1].startswith(f"{path}:6: source 'first': colour: unknown key; allowed keys: ")


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30", 30.0),
        ("0.5", 0.5),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
    ],
)
def test_sources_durations_are_the_rule_grammar_or_seconds(
    tmp_path: Path, written: str, seconds: float
) -> None:
    """One grammar: what a rule file accepts (``1h30m``, ``2d``) a sources file accepts too."""
    path = write(
        tmp_path,
        f"sources:\n  - {{name: a, kind: aliunid, url: 'ws://h/l', api_key: abcd, "
        f"idle_timeout: {written}}}\n",
    )
    (source,) = load_sources(path, {})
    assert source.idle_timeout == seconds

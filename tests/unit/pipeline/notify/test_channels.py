"""Channels: URLs from variables or files, every problem named, never a URL in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.notify.channels import (
    CONSOLE_CHANNEL,
    channel_names,
    channel_templates,
    load_channels,
    url_secrets,
    verifies_tls,
)
from tests.support.secrets import register_secret

SECRET_URL = "json://hook-user:s3cr3t-pa55@127.0.0.1:9/alerts"
register_secret("s3cr3t-pa55")
register_secret("s3cr3t-b0t-t0ken")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_only_console_exists() -> None:
    channels = load_channels(None, env={})
    assert set(channels) == {CONSOLE_CHANNEL}
    assert channels[CONSOLE_CHANNEL].url == "console://"
    assert channels[CONSOLE_CHANNEL].format == "text"


def test_url_from_env_and_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "slack_url"
    secret_file.write_text(SECRET_URL + "\n", encoding="utf-8")
    path = _write(
        tmp_path, "channels:\n  a:\n    url_env: HOOK_A\n  b:\n    url_file: slack_url\n"
    )  # a relative url_file is relative to channels.yaml
    channels = load_channels(path, env={"HOOK_A": SECRET_URL})
    assert set(channels) == {"console", "a", "b"}
    assert channels["a"].url == SECRET_URL
    assert channels["b"].url == SECRET_URL
    assert SECRET_URL not in repr(channels["a"])


def test_every_problem_is_reported_with_its_line_and_names_the_variable(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "channels:\n  a:\n    url_env: MISSING_A\n  b:\n    url_env: BAD_B\n"
        "  c:\n    url_file: /nonexistent/url\n",
    )
    with pytest.raises(ConfigError) as info:
        load_channels(path, env={"BAD_B": "nosuchscheme://user:s3cr3t-pa55@host/"})
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:2: channel 'a': environment variable MISSING_A is not set; set it to the channel's apprise URL",
        f"{path}:4: channel 'b': apprise cannot load its URL (unknown scheme or malformed); check the URL held "
        "by its variable or file (the URL itself is not shown: it may carry a token)",
        f"{path}:6: channel 'c': cannot read url_file /nonexistent/url: No such file or directory",
    ]
    assert "s3cr3t" not in str(info.value)


def test_entry_needs_exactly_one_source(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "channels:\n  a: {url_env: A, url_file: /x}\n  b: {}\n  c: {url: 'json://x'}\n  console: {url_env: X}\n",
    )
    with pytest.raises(ConfigError) as info:
        channel_names(path)
    assert str(info.value).splitlines() == [
        f"{path}:2: channels.a: set exactly one of url_env (a variable name) or url_file (a path)",
        f"{path}:3: channels.b: set exactly one of url_env (a variable name) or url_file (a path)",
        f"{path}:4: channels.c.url: unknown key; allowed keys are format, rate_limit, send_resolved, "
        "templates, tls_insecure_acknowledged, url_env, url_file",
        f"{path}:5: channels.console: the console channel is built in; choose another name",
    ]


def test_channel_names_do_not_need_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  ops:\n    url_env: NOT_SET_ANYWHERE\n")
    assert channel_names(path) == {"console", "ops"}
    assert channel_names(None) == {"console"}


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  a: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid YAML"):
        channel_names(path)


def test_format_is_explicit_or_follows_the_scheme_and_templates_are_passed_on(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        "channels:\n"
        "  mail: {url_env: MAIL}\n"
        "  chat: {url_env: CHAT}\n"
        "  forced:\n    url_env: MAIL\n    format: text\n    templates: {title: 'T {{ kind }}'}\n",
    )
    channels = load_channels(
        path, env={"MAIL": "mailto://u:pw@example.com", "CHAT": "slack://T0/B0/C0"}
    )
    assert {n: c.format for n, c in channels.items()} == {
        "console": "text",
        "mail": "html",
        "chat": "markdown",
        "forced": "text",
    }
    templates = channel_templates(channels)
    assert templates["forced"].title == "T {{ kind }}"
    assert templates["mail"].title is None


def test_url_secrets_cover_tokens_in_every_place() -> None:
    secrets = url_secrets("tgram://123456:ABCDEF/-100200?token=zzzz9&mode=x")
    assert "123456:ABCDEF" in secrets
    assert "-100200" in secrets
    assert "zzzz9" in secrets
    assert "pw99" in url_secrets("mailto://user:pw99@example.com")


# --- TLS verification ------------------------------------------------------------------------

INSECURE_URLS = [
    # Path segments count as secrets for the log filter (url_secrets): keep them unique here,
    # or a word such as "hook" would be masked in every later test's logs.
    "jsons://hook-user:s3cr3t-pa55@alerts.example/in-7f3a9?verify=no",
    "jsons://alerts.example/in-7f3a9?verify=false",
    "json://127.0.0.1:9/in-7f3a9?VERIFY=Off",
    "tgram://123456:s3cr3t-b0t-t0ken/987?verify=0",
]


@pytest.mark.parametrize("url", INSECURE_URLS)
def test_a_url_that_turns_tls_verification_off_is_refused(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, "channels:\n  ops:\n    url_env: HOOK\n")
    with pytest.raises(ConfigError) as info:
        load_channels(path, env={"HOOK": url})
    assert str(info.value) == (
        f"{path}:2: channel 'ops': its URL turns TLS certificate verification off (verify=no); "
        "remove that option, or set tls_insecure_acknowledged: true on the channel if you "
        "really mean it"
    )
    assert "s3cr3t" not in str(info.value)


def test_acknowledged_insecure_tls_is_loaded_and_warned_about_by_channel_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(
        tmp_path,
        "channels:\n  lab:\n    url_env: HOOK\n    tls_insecure_acknowledged: true\n"
        "  ops:\n    url_env: SAFE\n",
    )
    url = INSECURE_URLS[0]
    channels = load_channels(path, env={"HOOK": url, "SAFE": SECRET_URL})
    assert not verifies_tls(channels["lab"].apprise)
    assert verifies_tls(channels["ops"].apprise)
    warnings = [
        r for r in caplog.records if "TLS certificate verification is OFF" in r.getMessage()
    ]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "channel=lab" in warnings[0].getMessage()
    assert "s3cr3t" not in caplog.text


def test_acknowledgement_is_a_strict_boolean(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "channels:\n  lab:\n    url_env: HOOK\n    tls_insecure_acknowledged: 'yes'\n"
    )
    with pytest.raises(ConfigError) as info:
        channel_names(path)
    assert str(info.value).startswith(f"{path}:4: channels.lab.tls_insecure_acknowledged: ")


def test_urls_verify_tls_by_default() -> None:
    import apprise

    for url in ("jsons://alerts.example/hook", "mailtos://u:p@mail.example", "slack://T1/B1/C1"):
        target = apprise.Apprise()
        assert target.add(url)
        assert verifies_tls(target), url

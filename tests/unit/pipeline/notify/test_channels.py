"""Channels: URLs from variables or files, every problem named, never a URL in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.notify.channels import CONSOLE_CHANNEL, channel_names, load_channels

SECRET_URL = "json://hook-user:s3cr3t-pa55@127.0.0.1:9/alerts"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_only_console_exists() -> None:
    channels = load_channels(None, env={})
    assert set(channels) == {CONSOLE_CHANNEL}
    assert channels[CONSOLE_CHANNEL].url == "console://"


def test_url_from_env_and_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "slack_url"
    secret_file.write_text(SECRET_URL + "\n", encoding="utf-8")
    path = _write(
        tmp_path, f"channels:\n  a:\n    url_env: HOOK_A\n  b:\n    url_file: {secret_file}\n"
    )
    channels = load_channels(path, env={"HOOK_A": SECRET_URL})
    assert set(channels) == {"console", "a", "b"}
    assert channels["a"].url == SECRET_URL
    assert channels["b"].url == SECRET_URL
    assert SECRET_URL not in repr(channels["a"])


def test_every_problem_is_reported_and_names_the_variable(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "channels:\n  a:\n    url_env: MISSING_A\n  b:\n    url_env: BAD_B\n  console:\n    url_env: X\n",
    )
    with pytest.raises(ConfigError) as info:
        load_channels(path, env={"BAD_B": "nosuchscheme://user:s3cr3t-pa55@host/"})
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}: channel 'a': environment variable MISSING_A is not set; set it to the channel's apprise URL",
        f"{path}: channel 'b': apprise cannot load its URL (unknown scheme or malformed); check the URL held "
        "by its variable or file (the URL itself is not shown: it may carry a token)",
        f"{path}: channel 'console' is built in; choose another name",
    ]
    assert "s3cr3t" not in str(info.value)


def test_entry_needs_exactly_one_source(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "channels:\n  a: {url_env: A, url_file: /x}\n  b: {}\n  c: {url: 'json://x'}\n"
    )
    with pytest.raises(ConfigError) as info:
        channel_names(path)
    text = str(info.value)
    assert "channels.a: Value error, set exactly one of url_env" in text
    assert "channels.b: Value error, set exactly one of url_env" in text
    assert "channels.c.url: Extra inputs are not permitted" in text


def test_channel_names_do_not_need_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  ops:\n    url_env: NOT_SET_ANYWHERE\n")
    assert channel_names(path) == {"console", "ops"}
    assert channel_names(None) == {"console"}


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "channels:\n  a: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: not valid YAML$"):
        channel_names(path)

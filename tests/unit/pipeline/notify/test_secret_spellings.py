"""Issue 16, defects 6 and 8: secrets masked in every spelling and only secrets; body_file
kept next to channels.yaml; clear-text schemes warned about.

Before the fix a percent-encoded Telegram token was logged decoded, a peer's echoed
``Authorization: Basic`` header was not masked, ``hooks.slack.com`` became
``***s.slack.com``, ``body_file: /proc/self/environ`` put an SMTP password in a notification
and ``mailto://`` loaded without a word."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.notify.channels import load_channels, url_secrets
from producers.redact import SecretFilter, basic_auth
from tests.support.secrets import register_secret

TOKEN = register_secret("123456:AAH%2Denc7Qx")
PASSWORD = register_secret('pa"ss-w0rd%21')


def masked(urls: list[str], text: str) -> str:
    return SecretFilter(s for url in urls for s in url_secrets(url)).redact(text)


def test_a_percent_encoded_token_is_masked_decoded_too() -> None:
    url = f"tgram://{TOKEN}/-100200"
    line = "posting to https://api.telegram.org/bot123456:AAH-enc7Qx/sendMessage"
    assert "AAH-enc7Qx" not in masked([url], line)
    assert "AAH%2Denc7Qx" not in masked([url], f"url={url}")


def test_basic_auth_echoed_by_a_peer_is_masked() -> None:
    url = "jsons://ops:s3cret-pw9@alerts.example.com/in"
    header = f"Authorization: Basic {basic_auth('ops', 's3cret-pw9')}"
    assert masked([url], header) == "Authorization: Basic ***"


def test_a_json_escaped_password_is_masked() -> None:
    url = f"mailtos://ops:{PASSWORD}@mail.example.com"
    body = json.dumps({"password": 'pa"ss-w0rd!'})  # the URL's password decoded, escaped
    assert "ss-w0rd" not in masked([url], body)


def test_ordinary_words_in_urls_are_not_masked() -> None:
    urls = [
        "json://127.0.0.1:8080/lab-hook",
        "slack://T0AB12CD3/B0AB12CD3/abcdefghijklmnopqrstuvwx/#lab-hook",
        "jsons://hooks.example.com/services/alerts",
    ]
    text = "sent to hooks.slack.com channel lab-hook via services"
    assert masked(urls, text) == text
    secrets = url_secrets(urls[1])
    assert "abcdefghijklmnopqrstuvwx" in secrets and "B0AB12CD3" in secrets


def channels_file(folder: Path, body_file: str) -> Path:
    path = folder / "channels.yaml"
    path.write_text(
        "channels:\n  mail:\n    url_env: MAIL_URL\n"
        f"    templates:\n      body_file: {body_file}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("body_file", ["/proc/self/environ", "/dev/zero", "../outside.j2"])
def test_body_file_must_be_a_file_next_to_channels_yaml(tmp_path: Path, body_file: str) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (tmp_path / "outside.j2").write_text("secret {{ title }}", encoding="utf-8")
    path = channels_file(folder, body_file)
    with pytest.raises(ConfigError) as caught:
        load_channels(path, env={"MAIL_URL": "mailtos://u:p4ssw0rd@mail.example.com"})
    message = str(caught.value)
    assert f"{path}:5: channels.mail.templates.body_file:" in message
    assert "outside the channels file's folder" in message or "not a regular file" in message


def test_a_body_file_next_to_channels_yaml_loads(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "b.j2").write_text("body {{ title }}", encoding="utf-8")
    path = channels_file(tmp_path, "templates/b.j2")
    channels = load_channels(path, env={"MAIL_URL": "mailtos://u:p4ssw0rd@mail.example.com"})
    assert "mail" in channels


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("mailto://u:p4ssw0rd@mail.example.com", "mailto"), ("json://alerts.example.com/in", "json")],
)
def test_clear_text_schemes_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str, scheme: str
) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  plain:\n    url_env: PLAIN_URL\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pipeline.notify.channels"):
        load_channels(path, env={"PLAIN_URL": url})
    assert f"channel sends in clear text, without TLS; use {scheme}s://" in caplog.text
    assert "channel=plain" in caplog.text


def test_tls_and_https_only_services_are_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n  a:\n    url_env: A\n  b:\n    url_env: B\n  c:\n    url_env: C\n",
        encoding="utf-8",
    )
    env = {
        "A": "mailtos://u:p4ssw0rd@mail.example.com",
        "B": "tgram://123456:AAHxyz789/-100",
        "C": "json://127.0.0.1:9/in",
    }
    with caplog.at_level(logging.WARNING, logger="pipeline.notify.channels"):
        load_channels(path, env=env)
    assert "clear text" not in caplog.text

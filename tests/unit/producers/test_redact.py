"""redact_url, redact_text, SecretFilter and install_secret_filter."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from producers import redact
from producers.redact import SecretFilter, install_secret_filter, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "wss://operator.aliunid.com/web/api/live?apiKey=abc123&id=mp-1",
            "wss://operator.aliunid.com/web/api/live?apiKey=***&id=mp-1",
        ),
        ("ws://h/p?APIKEY=abc", "ws://h/p?APIKEY=***"),
        ("ws://h/p?apikey=abc", "ws://h/p?apikey=***"),
        ("ws://h/p?key=abc&x=1", "ws://h/p?key=***&x=1"),
        ("ws://h/p?Token=abc", "ws://h/p?Token=***"),
        ("ws://h/p?access_token=abc", "ws://h/p?access_token=***"),
        ("ws://h/p?auth=abc", "ws://h/p?auth=***"),
        ("ws://h/p?password=abc", "ws://h/p?password=***"),
        ("ws://h/p?passcode=abc", "ws://h/p?passcode=***"),
        ("ws://h/p?SECRET=abc", "ws://h/p?SECRET=***"),
        ("ws://h/p?id=1&apiKey=a%2Fb%3Dc&id=2", "ws://h/p?id=1&apiKey=***&id=2"),
        ("ws://h/p?api%4Bey=abc", "ws://h/p?api%4Bey=***"),  # name percent-encoded
        ("amqp://user:pa55word@broker:5672/vhost", "amqp://user:***@broker:5672/vhost"),
        ("https://user:pw@h/p?token=t#frag", "https://user:***@h/p?token=***#frag"),
    ],
)
def test_redact_url_masks_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8765/web/api/data-export/v1/businesses/b/measuring-points/live",
        "ws://h/p?id=1&id=2&monkey=banana&keyboard=1",
        "https://user@h/p",  # a user name alone is not a credential
        "ws://h/p?apiKey",  # no value to hide
    ],
)
def test_redact_url_leaves_other_urls_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_falls_back_to_text_masking_when_unparseable() -> None:
    assert redact_url("ws://[bad/p?apiKey=abc") == "ws://[bad/p?apiKey=***"


def test_redact_text_masks_request_lines_and_embedded_urls() -> None:
    line = "> GET /live?apiKey=s3cret&id=1 HTTP/1.1 then amqp://u:pw@h/ and monkey=1"
    expected = "> GET /live?apiKey=***&id=1 HTTP/1.1 then amqp://u:***@h/ and monkey=1"
    assert redact_text(line) == expected


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args or None, exc_info)


def _formatted(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(record)


def test_secret_filter_masks_the_message() -> None:
    record = _record("connecting with key hunter2-key now")
    assert SecretFilter(["hunter2-key"]).filter(record) is True
    assert record.getMessage() == "connecting with key *** now"


def test_secret_filter_masks_args_after_formatting() -> None:
    record = _record("url=%s attempt=%d", "ws://h/?k=hunter2-key", 3)
    SecretFilter(["hunter2-key"]).filter(record)
    assert record.getMessage() == "url=ws://h/?k=*** attempt=3"
    assert record.args == ()


def test_secret_filter_masks_exception_text() -> None:
    try:
        raise ValueError("bad key hunter2-key")
    except ValueError as exc:
        record = _record("failed", exc=exc)
    SecretFilter(["hunter2-key"]).filter(record)
    text = _formatted(record)
    assert "hunter2-key" not in text
    assert "ValueError: bad key ***" in text


def test_secret_filter_masks_already_formatted_exception_and_stack_text() -> None:
    record = _record("failed")
    record.exc_text = "Traceback: hunter2-key"
    record.stack_info = "Stack: hunter2-key"
    SecretFilter(["hunter2-key"]).filter(record)
    assert record.exc_text == "Traceback: ***"
    assert record.stack_info == "Stack: ***"


def test_secret_filter_leaves_records_without_secrets_untouched() -> None:
    record = _record("value=%s", "harmless")
    SecretFilter(["hunter2-key"]).filter(record)
    assert record.msg == "value=%s"
    assert record.args == ("harmless",)


def test_secret_filter_ignores_short_secrets() -> None:
    fil = SecretFilter(["abc", "", "abcd"])
    assert fil.secrets_count == 1
    record = _record("abc abcd")
    fil.filter(record)
    assert record.getMessage() == "abc ***"


def test_secret_filter_masks_the_longest_secret_first() -> None:
    record = _record("token=abcd-efgh")
    SecretFilter(["abcd", "abcd-efgh"]).filter(record)
    assert record.getMessage() == "token=***"


def test_secret_filter_can_also_mask_credential_parameters() -> None:
    record = _record("> GET /live?apiKey=%s HTTP/1.1", "unknown-to-filter")
    SecretFilter(redact_credentials=True).filter(record)
    assert record.getMessage() == "> GET /live?apiKey=*** HTTP/1.1"


@pytest.fixture
def root_handler() -> Iterator[logging.Handler]:
    """A handler on the root logger, and no shared filter left behind on any handler."""
    handler = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    shared = redact._installed
    for h in root.handlers:
        if shared is not None:
            h.removeFilter(shared)


def test_install_secret_filter_covers_root_handlers_and_accumulates(
    root_handler: logging.Handler,
) -> None:
    first = install_secret_filter(["first-secret"])
    assert first in root_handler.filters
    late = logging.NullHandler()
    logging.getLogger().addHandler(late)
    try:
        second = install_secret_filter(["second-secret"])
        assert second is first
        assert first in late.filters
        assert root_handler.filters.count(first) == 1
        record = _record("first-secret and second-secret")
        first.filter(record)
        assert record.getMessage() == "*** and ***"
    finally:
        logging.getLogger().removeHandler(late)


def test_masked_record_still_formats_with_a_formatter_that_touches_args() -> None:
    """mode's formatter rebuilds args; with args=None the record failed to format and was lost."""
    import logging as _logging

    class ArgsTouchingFormatter(_logging.Formatter):
        def format(self, record: _logging.LogRecord) -> str:
            record.args = tuple(record.args or ())
            return super().format(record)

    secret = "s3cr3t-token-value"
    record = _logging.LogRecord("x", _logging.INFO, __file__, 1, "key=%s done", (secret,), None)
    assert SecretFilter([secret]).filter(record)
    assert ArgsTouchingFormatter("%(message)s").format(record) == "key=*** done"

"""The suite's secret registry: every credential a test configures, to be searched for in logs.

Test modules register their credentials where they define them::

    from tests.support.secrets import register_secret

    API_KEY = register_secret("sk-live/7f3a+9c1e=5b2d&x")

and tests that make one at run time call ``register_secret(value)`` (or the fixture of the
same name). At the end of the run, ``tests/conftest.py`` searches every log record of the whole
suite (message and exception text, every logger, DEBUG included) for each registered value in
every spelling (:func:`forms_of`: percent-encoded and decoded, JSON-escaped, Basic-auth base64
of ``user:password``), and fails the run naming the tests whose records carry one.

Values shorter than :data:`MIN_LENGTH` are ignored: they would match by accident.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "BETWEEN_TESTS",
    "EXEMPT_LOGGERS",
    "MIN_LENGTH",
    "SECRETS",
    "SUITE_RECORDS",
    "SuiteRecords",
    "forms_of",
    "register_secret",
]

MIN_LENGTH = 6
#: How many tests are named per leaking record in the report.
MAX_OWNERS = 3
#: The owner of records logged while no test runs.
BETWEEN_TESTS = "<outside any test: collection, session fixtures or teardown>"
#: Loggers whose records are not StreamWarden's output, so they are not searched:
#: ``websockets.server`` is the upstream's side (simulators and scripted test servers receive
#: the credential by design) and ``websockets.client`` the raw protocol clients tests use to
#: probe simulators. Producers never log there: they hand websockets their own, masking
#: logger (``producers.transports.websocket.wire``), which
#: ``tests/unit/test_secret_scan.py`` checks in the source.
EXEMPT_LOGGERS = frozenset({"websockets.server", "websockets.client"})

#: Registered secrets, in registration order (module-level code may append directly).
SECRETS: list[str] = []

_lock = threading.Lock()


def register_secret(value: str) -> str:
    """Remember ``value`` as a secret that no log record may contain; return it unchanged."""
    with _lock:
        if value not in SECRETS:
            SECRETS.append(value)
    return value


def forms_of(value: str) -> set[str]:
    """Every spelling of ``value`` a log line may carry: as given, percent-encoded (URLs),
    percent-decoded (a library logging a URL it parsed), JSON-escaped (a body), and for a
    ``user:password`` value its ``Authorization: Basic`` base64 form (written out here
    independently of ``producers.redact``, so the scan does not trust the code it checks)."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), unquote(value)}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}
    if ":" in value:
        forms.add(base64.b64encode(value.encode()).decode("ascii"))
    return {form for form in forms if form}


class SuiteRecords(logging.Handler):
    """Keeps the text of every record of the run, with the tests that logged it.

    Identical texts are stored once (with up to three test ids), which keeps memory flat for
    the many repeated debug lines of a long run.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.texts: dict[str, list[str]] = {}
        self.records_total = 0
        self.exempt_total = 0
        self.current = BETWEEN_TESTS
        self._formatter = logging.Formatter()
        self._guard = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and keep a *copy*: filters attached to this handler (the shared secret filter
        that ``install_secret_filter`` puts on every root handler) mask what is kept here, as
        they would in production, but must not rewrite the record other handlers see: this
        handler lives for the whole session, and a filter one test installed would otherwise
        mask later tests' ``caplog`` text."""
        copy = logging.makeLogRecord(record.__dict__)
        if not self.filter(copy):
            return False
        self.emit(copy)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in EXEMPT_LOGGERS:
            self.exempt_total += 1
            return
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is
            message = f"{record.msg!r} % {record.args!r}"
        parts = [f"{record.levelname} {record.name}: {message}"]
        if record.exc_text:
            parts.append(record.exc_text)
        elif record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        text = "\n".join(parts)
        with self._guard:
            self.records_total += 1
            owners = self.texts.setdefault(text, [])
            if len(owners) < MAX_OWNERS and self.current not in owners:
                owners.append(self.current)

    def leaks(self, secrets: list[str]) -> list[str]:
        """Report lines for every registered secret found in a record; empty when clean."""
        forms = {
            form: secret
            for secret in secrets
            if len(secret) >= MIN_LENGTH
            for form in forms_of(secret)
        }
        if not forms:
            return []
        pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
        found: dict[str, dict[str, str]] = {}  # secret -> test -> masked excerpt
        with self._guard:
            items = list(self.texts.items())
        for text, owners in items:
            for match in pattern.finditer(text):
                secret = forms[match.group()]
                start = max(0, match.start() - 80)
                window = text[start : match.end() + 40]
                if start > 0:  # keep the level and logger name in view
                    window = text.split(": ", 1)[0] + ": ..." + window
                excerpt = pattern.sub("<SECRET>", window).replace("\n", "\\n")
                for owner in owners:
                    found.setdefault(secret, {}).setdefault(owner, excerpt)
        lines = []
        for index, secret in enumerate(secrets):
            for owner, excerpt in found.get(secret, {}).items():
                shown = f"#{index} ({secret[:3]}..., {len(secret)} chars)"
                lines.append(f"secret {shown} logged by {owner}: {excerpt}...")
        return lines


#: The session's handler; ``tests/conftest.py`` puts it on the root logger.
SUITE_RECORDS = SuiteRecords()

"""Silences: "do not notify about alerts matching these matchers between start and end".

Stored as one JSON file (``silences: {file: ...}`` in channels.yaml), not in the worker's
state table, because:

- ``streamwarden silence add|list|expire`` runs as a separate process, often on an
  operator's machine; a file needs no Kafka client, no broker and no running worker;
- silences are few, written by people, and worth reading and reviewing as text
  (``cat silences.json``, backups, config management);
- the worker only reads it: it checks the file's modification time (at most once a second of
  event time) and reloads when it changed, so a new silence applies within a second.

Writes take an exclusive ``flock`` on ``<file>.lock``, write a temporary file in the same
folder, ``fsync`` it and ``os.replace`` it over the old one: readers see the old or the new
file, never half of one. Expired silences are kept :data:`RETENTION_MS` for the record, then
dropped on the next write. Several workers need the file on a shared volume.

A silence is active when ``starts_at_ms <= now < ends_at_ms``; expiring one sets its end to
now. What silencing does to notifications is described in :mod:`pipeline.alerting.dispatch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from pipeline.alerting.matchers import Matcher, MatcherError, matches_all, parse_matcher
from pipeline.errors import StreamWardenError

__all__ = [
    "RETENTION_MS",
    "ActiveSilence",
    "Silence",
    "SilenceError",
    "SilenceFileStore",
    "SilenceSource",
    "StaticSilences",
    "add_silence",
    "expire_silence",
    "list_silences",
]

logger = logging.getLogger(__name__)

RETENTION_MS = 5 * 24 * 3_600_000
"""How long an expired silence stays in the file."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last time Python's datetime can show."""
MAX_SILENCE_MS = 366 * 24 * 3_600_000
"""Longest silence accepted (a typo such as 1000d should not silence forever)."""
RELOAD_CHECK_MS = 1000
"""How often (in the ``now_ms`` the caller passes) the file's modification time is checked."""

SilenceState = Literal["pending", "active", "expired"]


class SilenceError(StreamWardenError):
    """A silence cannot be added, found or expired; the message says why."""


class Silence(msgspec.Struct, frozen=True):
    """One silence as stored.

    Attributes:
        id: 32 hex digits; commands accept any unique prefix of at least 4.
        matchers: matcher strings (all must match).
        starts_at_ms, ends_at_ms: when it applies.
        comment, author: why and who (both required).
        created_at_ms, updated_at_ms: bookkeeping.
    """

    id: str
    matchers: tuple[str, ...]
    starts_at_ms: int
    ends_at_ms: int
    comment: str
    author: str
    created_at_ms: int
    updated_at_ms: int

    def state(self, now_ms: int) -> SilenceState:
        """``pending`` before its start, ``active`` until its end, then ``expired``."""
        if now_ms < self.starts_at_ms:
            return "pending"
        return "active" if now_ms < self.ends_at_ms else "expired"


class _SilenceFile(msgspec.Struct):
    version: int = 1
    silences: list[Silence] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class ActiveSilence:
    """A silence with its matchers compiled, as the dispatcher uses it."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int

    def applies(self, labels: dict[str, str], now_ms: int) -> bool:
        """Whether it is active at ``now_ms`` and matches ``labels``."""
        return self.starts_at_ms <= now_ms < self.ends_at_ms and matches_all(self.matchers, labels)


class SilenceSource:
    """What the dispatcher asks for silences (a protocol with a do-nothing default)."""

    def silences(self, now_ms: int) -> Sequence[ActiveSilence]:
        """Silences that are active or pending at ``now_ms``."""
        return ()


class StaticSilences(SilenceSource):
    """A fixed list of silences (tests, previews)."""

    def __init__(self, silences: Sequence[Silence] = ()) -> None:
        self._compiled = [_compile(s) for s in silences]

    def silences(self, now_ms: int) -> Sequence[ActiveSilence]:
        return [s for s in self._compiled if s.ends_at_ms > now_ms]


def _compile_each(silences: Sequence[Silence], path: Path) -> list[ActiveSilence]:
    """Compile every silence that compiles; one with a broken matcher (a hand-edited file)
    is skipped with a warning naming it, instead of disabling all the others."""
    compiled = []
    for silence in silences:
        try:
            compiled.append(_compile(silence))
        except MatcherError as exc:
            logger.warning(
                "silence skipped: invalid matcher path=%s id=%s error=%s", path, silence.id, exc
            )
    return compiled


def _compile(silence: Silence) -> ActiveSilence:
    return ActiveSilence(
        silence.id,
        tuple(parse_matcher(m) for m in silence.matchers),
        silence.starts_at_ms,
        silence.ends_at_ms,
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_SilenceFile)


def _read(path: Path) -> _SilenceFile:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _SilenceFile()
    except OSError as exc:
        raise SilenceError(f"{path}: cannot read silences file: {exc.strerror}") from None
    if not data.strip():
        return _SilenceFile()
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SilenceError(f"{path}: not a silences file: {exc}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write(path: Path, content: _SilenceFile) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(_encoder.encode(content), indent=2) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def add_silence(
    path: Path,
    matchers: Sequence[str],
    *,
    starts_at_ms: int,
    ends_at_ms: int,
    comment: str,
    author: str,
    now_ms: int,
) -> Silence:
    """Add a silence to the file (created if missing).

    Args:
        path: the silences file.
        matchers: at least one matcher string (see :mod:`pipeline.alerting.matchers`).
        starts_at_ms, ends_at_ms: when it applies; the end must be after the start and in
            the future, at most a year after the start.
        comment, author: required, non-empty.
        now_ms: the current time.

    Raises:
        SilenceError: every problem with the arguments, one per line, or the file cannot be
            read or written.
    """
    problems: list[str] = []
    if not matchers:
        problems.append("give at least one matcher, such as rule=ev-charger-offline")
    for text in matchers:
        try:
            parse_matcher(text)
        except MatcherError as exc:
            problems.append(str(exc))
    if ends_at_ms <= starts_at_ms:
        problems.append("the end must be after the start")
    elif ends_at_ms <= now_ms:
        problems.append("the end is in the past; a silence must end in the future")
    elif ends_at_ms - starts_at_ms > MAX_SILENCE_MS:
        problems.append("a silence may last at most 366 days")
    elif ends_at_ms > MAX_TIME_MS:
        problems.append("the end is after the year 9999; choose an earlier end")
    if not comment.strip():
        problems.append("a comment is required: say why the alerts are silenced")
    if not author.strip():
        problems.append("an author is required")
    if problems:
        raise SilenceError("\n".join(problems))
    silence = Silence(
        id=uuid.uuid4().hex,
        matchers=tuple(m.strip() for m in matchers),
        starts_at_ms=starts_at_ms,
        ends_at_ms=ends_at_ms,
        comment=comment.strip(),
        author=author.strip(),
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    with _locked(path):
        content = _read(path)
        content.silences = [*_retained(content.silences, now_ms), silence]
        _write(path, content)
    logger.info(
        "silence added id=%s matchers=%s ends_at_ms=%d author=%s",
        silence.id,
        ",".join(silence.matchers),
        silence.ends_at_ms,
        silence.author,
    )
    return silence


def _retained(silences: list[Silence], now_ms: int) -> list[Silence]:
    return [s for s in silences if s.ends_at_ms + RETENTION_MS > now_ms]


def list_silences(
    path: Path, *, now_ms: int, include_expired: bool = False
) -> list[tuple[Silence, SilenceState]]:
    """Silences with their state at ``now_ms``, ordered by start then id.

    Raises:
        SilenceError: the file cannot be read or is not a silences file.
    """
    content = _read(path)
    out = [(s, s.state(now_ms)) for s in content.silences]
    if not include_expired:
        out = [(s, state) for s, state in out if state != "expired"]
    return sorted(out, key=lambda item: (item[0].starts_at_ms, item[0].id))


def expire_silence(path: Path, silence_id: str, *, now_ms: int) -> Silence:
    """End a silence now (a pending one is ended before it starts).

    Args:
        silence_id: the id or a unique prefix of at least 4 characters.

    Returns:
        The silence as updated.

    Raises:
        SilenceError: no silence or several silences match, or it already expired.
    """
    prefix = silence_id.strip().lower()
    if len(prefix) < 4:
        raise SilenceError(f"silence id {silence_id!r} is too short; give at least 4 characters")
    with _locked(path):
        content = _read(path)
        found = [s for s in content.silences if s.id.startswith(prefix)]
        if not found:
            raise SilenceError(f"no silence has an id starting with {prefix!r}")
        if len(found) > 1:
            raise SilenceError(
                f"{len(found)} silences have an id starting with {prefix!r}; give more characters"
            )
        target = found[0]
        if target.state(now_ms) == "expired":
            raise SilenceError(f"silence {target.id} already expired")
        updated = msgspec.structs.replace(
            target,
            ends_at_ms=now_ms,
            starts_at_ms=min(target.starts_at_ms, now_ms),
            updated_at_ms=now_ms,
        )
        content.silences = [
            updated if s.id == target.id else s for s in _retained(content.silences, now_ms)
        ]
        _write(path, content)
    logger.info("silence expired id=%s", updated.id)
    return updated


class SilenceFileStore(SilenceSource):
    """The worker's view of the silences file: reloaded when its modification time changes.

    A file that cannot be read or parsed keeps the last good silences and logs a warning
    once per change, so a bad edit by hand never un-silences everything.

    Args:
        path: the silences file (it may not exist yet).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._checked_ms: int | None = None
        self._compiled: list[ActiveSilence] = []

    def silences(self, now_ms: int) -> Sequence[ActiveSilence]:
        if self._checked_ms is None or abs(now_ms - self._checked_ms) >= RELOAD_CHECK_MS:
            self._checked_ms = now_ms
            self._reload_if_changed()
        return [s for s in self._compiled if s.ends_at_ms > now_ms]

    def _reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        except OSError as exc:
            logger.warning("silences file unreadable path=%s error=%s", self.path, exc.strerror)
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            content = _read(self.path)
            compiled = _compile_each(content.silences, self.path)
        except SilenceError as exc:
            logger.warning("silences file not loaded, keeping the previous silences: %s", exc)
            return
        self._compiled = compiled
        logger.info("silences loaded path=%s count=%d", self.path, len(compiled))

"""Exceptions of the producers package.

::

    ProducerError                root of every error a producer raises on purpose
    ├── SourceConfigError        a sources-file entry is invalid or names a missing variable
    ├── UpstreamAuthError        the upstream refused our credentials (401/403): fatal, no retry
    ├── UpstreamRejectedError    the upstream refused a subscription or request: fatal, no retry
    ├── UpstreamConnectionError  the connection failed or dropped: retried with backoff
    └── SinkError                envelopes cannot be delivered (non-retriable Kafka error,
                                 sink closed, flush timed out): fatal

Messages never contain secrets: URLs are shown redacted and credentials by variable name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ProducerError(Exception):
    """Root of the producers' own errors."""


@dataclass(frozen=True)
class SourceProblem:
    """One problem in a sources file, at one line.

    Attributes:
        path: the sources file as given.
        line: 1-based line, or None when the problem concerns the whole file.
        source: ``source 'name'`` or ``sources[i]`` when the entry has no usable name; empty
            for file-level problems.
        key: dotted key path inside the entry (``api_key``, ``measuring_points[1]``), or empty.
        message: what is wrong; never contains a secret value.
    """

    path: str
    line: int | None
    source: str
    key: str
    message: str

    def __str__(self) -> str:
        parts = [self.path if self.line is None else f"{self.path}:{self.line}"]
        parts += [p for p in (self.source, self.key) if p]
        return ": ".join([*parts, self.message])


class SourceConfigError(ProducerError):
    """A source entry cannot be used; the message names the entry and the key or variable.

    ``problems`` holds every problem found (in line order) when the error comes from a sources
    file; the message is then one problem per line.
    """

    def __init__(self, message: str = "", *, problems: Sequence[SourceProblem] = ()) -> None:
        self.problems: tuple[SourceProblem, ...] = tuple(problems)
        text = "\n".join(str(p) for p in self.problems) if self.problems else message
        super().__init__(text)


class UpstreamAuthError(ProducerError):
    """The upstream refused our credentials. Retrying cannot help, so the producer stops."""


class UpstreamRejectedError(ProducerError):
    """The upstream refused a subscription or request. Retrying cannot help."""


class UpstreamConnectionError(ProducerError):
    """The connection failed or dropped; the run loop retries with backoff."""


class SinkError(ProducerError):
    """Envelopes cannot be delivered: the sink is closed, failed permanently or timed out.

    Raised by ``send``, ``flush`` and ``close``; the producer stops with it.
    """

"""Exceptions of the pipeline package.

::

    StreamWardenError                   root of every error the pipeline raises on purpose
    ├── ConfigError                     settings or channels unusable (names the key/variable)
    ├── RuleError                       one or more rule files invalid; carries every problem
    ├── BadInputError                   an upstream frame cannot be normalized (goes to dead-letter)
    └── NotifyError                     a notification was not delivered (retryable or permanent)

Messages never contain secrets: channel URLs, API keys and tokens are described by the name of
the variable that holds them, never by value.
"""

from __future__ import annotations

from dataclasses import dataclass


class StreamWardenError(Exception):
    """Root of the pipeline's own errors."""


class ConfigError(StreamWardenError):
    """Configuration cannot be used; the message says which key or variable and what to do."""


@dataclass(frozen=True)
class RuleProblem:
    """One problem in one rule file, at one line."""

    path: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path  # 0: the whole file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class RuleError(StreamWardenError):
    """Rule files are invalid. ``problems`` holds every problem found, in file and line order."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BadInputError(StreamWardenError):
    """An upstream frame cannot be normalized. The reason is safe to store in a dead letter."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotifyError(StreamWardenError):
    """A notification was not delivered to a channel.

    Attributes:
        channel: the channel name (never its URL).
        retryable: whether trying again later may succeed.
    """

    def __init__(self, channel: str, reason: str, *, retryable: bool) -> None:
        self.channel = channel
        self.reason = reason
        self.retryable = retryable
        kind = "retryable" if retryable else "permanent"
        super().__init__(f"channel {channel!r}: {reason} ({kind})")

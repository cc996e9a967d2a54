"""The ``console://`` and ``null://`` apprise schemes: print notifications to stdout, or drop them.

The demo needs a notification sink a person can watch without any account or server. Making it
an apprise plugin (rather than a special case in the sender) means it goes through exactly the
same delivery path as email or Slack.
"""

from __future__ import annotations

import sys
from typing import Any

from apprise.decorators import notify

CONSOLE_SCHEME = "console"


@notify(on=CONSOLE_SCHEME, name="StreamWarden console")  # type: ignore[no-untyped-call,untyped-decorator]
def _print_notification(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    """Print one notification as a framed block; apprise counts ``True`` as delivered."""
    lines = [f"[{notify_type.upper()}] {title}".rstrip(), *body.splitlines()]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return True


def register() -> None:
    """Importing this module registers the scheme; this function makes the intent explicit."""


NULL_SCHEME = "null"
null_deliveries = 0
"""How many notifications this process discarded through ``null://``."""


@notify(on=NULL_SCHEME, name="StreamWarden null sink")  # type: ignore[no-untyped-call,untyped-decorator]
def _discard_notification(
    body: str, title: str, notify_type: str, *args: Any, **kwargs: Any
) -> bool:
    """Accept and drop a notification: a channel for benchmarks and dry runs that still goes
    through apprise and the whole delivery path, but talks to nobody."""
    global null_deliveries
    null_deliveries += 1
    return True

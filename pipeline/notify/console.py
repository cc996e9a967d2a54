"""The ``console://`` apprise scheme: print notifications to the worker's standard output.

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

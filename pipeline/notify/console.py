"""The ``console://`` and ``null://`` apprise schemes: print notifications to stdout, or drop them.

The demo needs a notification sink a person can watch without any account or server. Making it
an apprise plugin (rather than a special case in the sender) means it goes through exactly the
same delivery path as email or Slack.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from apprise.decorators import notify

CONSOLE_SCHEME = "console"


# ANSI escape sequences (CSI, OSC...) and the other C0/C1 control characters but tab
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str, *, one_line: bool) -> str:
    """``text`` without escape sequences or control characters (an upstream entity name can
    hold both); ``one_line`` also turns line breaks into spaces."""
    text = _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n")))
    return " ".join(text.split("\n")) if one_line else text


def console_lines(body: str, title: str, notify_type: str) -> list[str]:
    """The printed block: a header line, then every body line indented by two spaces, so no
    text inside a notification (an entity name with ``\n[RESOLVED] ...``) can forge a header;
    escape sequences and control characters are removed."""
    header = f"[{notify_type.upper()}] {terminal_safe(title, one_line=True)}".rstrip()
    return [header, *(f"  {line}" for line in terminal_safe(body, one_line=False).splitlines())]


@notify(on=CONSOLE_SCHEME, name="StreamWarden console")  # type: ignore[no-untyped-call,untyped-decorator]
def _print_notification(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    """Print one notification as a framed block; apprise counts ``True`` as delivered."""
    lines = console_lines(body, title, notify_type)
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

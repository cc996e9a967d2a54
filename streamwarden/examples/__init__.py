"""Example rules and channels shipped with the package, so the demo runs from any folder.

``rules`` is a link to the checkout's top-level ``rules/`` folder (the one place rule examples
are edited); building the wheel copies the files it points to into the package.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
RULES = EXAMPLES / "rules"
CHANNELS = EXAMPLES / "channels.yaml"

"""Suite-wide fixtures and policy.

``require_service(name, reason)`` skips a test when a local service is missing on a user's
machine, but fails it in CI (``STREAMWARDEN_REQUIRE_SERVICES=1``), so a skipped test is never
passed off as done there.
"""

from __future__ import annotations

import os

import pytest


def require_service(name: str, reason: str) -> None:
    """Skip (or fail under STREAMWARDEN_REQUIRE_SERVICES=1) because ``name`` is unavailable."""
    message = f"{name} is not available: {reason}"
    if os.environ.get("STREAMWARDEN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (STREAMWARDEN_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(message)

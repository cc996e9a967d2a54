"""The ops tests run whole workers and read what they report about the cluster: lag from the
start of the fixed topics (``raw.<kind>.v1``, ``alerts.v1``), firing alerts from every record
of ``alerts.v1``, the notification history from ``notifications.v1``. On a shared broker those
views hold every other test's records, so the counts they assert would not be this test's.
They always get a broker of their own (see tests/integration/conftest.py); the whole worker is
tested against a shared broker by tests/integration/test_end_to_end.py."""

from __future__ import annotations

import pytest

from tests.integration.conftest import BrokerHandle


@pytest.fixture
def fresh_broker(private_broker: BrokerHandle) -> BrokerHandle:
    """``private_broker`` under the name the ops tests use."""
    return private_broker

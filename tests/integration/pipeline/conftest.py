"""Stage tests run one pipeline stage from the start of a fixed topic (``measurements.v1``,
``raw.<kind>.v1``) and count what it saw: on a shared broker they would count every other
test's records. They always get a broker of their own (see tests/integration/conftest.py);
the whole worker is tested against a shared broker by tests/integration/test_end_to_end.py and
test_replay_equals_live.py."""

from __future__ import annotations

import pytest

from tests.integration.conftest import BrokerHandle


@pytest.fixture
def fresh_broker(private_broker: BrokerHandle) -> BrokerHandle:
    """``private_broker`` under the name the stage tests use."""
    return private_broker

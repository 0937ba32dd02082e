"""Fixtures of the MQTT 3.1.1 protocol suite: the module's shared hub on each network."""

from __future__ import annotations

import uuid

import pytest

from tests.support.hubproc import HubProcess
from tests.support.networks import TRANSPORTS, Network


@pytest.fixture
def tag() -> str:
    """A short unique prefix for this test's client ids and topics (hubs may be shared)."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture(params=TRANSPORTS)
def network(shared_hub: HubProcess, request: pytest.FixtureRequest) -> Network:
    """Each network of the module's shared hub in turn."""
    return Network(shared_hub, request.param)


@pytest.fixture
def tcp(shared_hub: HubProcess) -> Network:
    """The TCP network of the module's shared hub."""
    return Network(shared_hub, "tcp")

"""Broker protocol tests: raw MQTT 3.1.1 clients on either of the hub's two networks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import CONNACK, RawClient

TRANSPORTS = ["tcp", "ws"]
# A packet the broker owes us (an ack, a routed message) arrives within WAIT.
WAIT = scaled(5)
# What a broker must do at once (close on bad input, resend on resume) happens within PROMPT.
PROMPT = scaled(0.3)
# Nothing arrived during QUIET: long enough for a local broker to have routed it.
QUIET = scaled(0.25)


@dataclass(frozen=True)
class Network:
    """Opens raw clients on one network of a running hub: "tcp" or "ws" (/mqtt)."""

    hub: HubProcess
    name: str

    async def open(self) -> RawClient:
        """A connection that has sent nothing yet."""
        if self.name == "tcp":
            return await RawClient.tcp(self.hub.host, self.hub.mqtt_port)
        return await RawClient.websocket(self.hub.ws_url)

    async def client(self, client_id: str, **connect: object) -> RawClient:
        """A connection whose CONNECT the broker accepted (return code 0)."""
        client = await self.open()
        _, code = await client.connect(client_id, **connect)
        assert code == 0, f"CONNECT of {client_id!r} refused with return code {code}"
        return client


async def assert_refused(client: RawClient) -> None:
    """The broker closes the connection promptly and never accepts it (no CONNACK with 0)."""
    seen = await client.packets_until_closed(PROMPT)
    accepted = [p for p in seen if p.kind == CONNACK and p.body[1:2] == b"\x00"]
    assert not accepted, f"the broker accepted the connection: {seen}"


async def assert_serving(network: Network, tag: str) -> None:
    """The broker still accepts connections and routes a message between two new clients."""
    sub = await network.client(f"{tag}-check-sub")
    assert await sub.subscribe([(f"{tag}/check", 1)]) == [1]
    pub = await network.client(f"{tag}-check-pub")
    await pub.publish(f"{tag}/check", b"still serving", qos=1, timeout=WAIT)
    msg = await sub.next_message(WAIT)
    assert (msg.topic, msg.payload) == (f"{tag}/check", b"still serving")
    await pub.disconnect()
    await sub.disconnect()


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

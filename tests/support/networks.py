"""The MQTT protocol suite's helpers: raw MQTT 3.1.1 clients on either of the hub's networks."""

from __future__ import annotations

from dataclasses import dataclass

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

"""Cluster mode end to end: hubs (`hub serve --broker rabbitmq`) against a real 3-node RabbitMQ
cluster, real firmware on the unix port, raw MQTT and Web MQTT clients, real PostgreSQL.

One cluster serves the module (it takes 25-45 s to start here); the tests that kill a node or a
hub run last."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.support import ClusterHub, Events, start_firmware, stored
from tests.support.devices import Device
from tests.support.hubproc import hub_cli, scaled
from tests.support.mqtt import (
    PUBACK,
    ConnectionClosed,
    RawClient,
    publish_packet,
    subscribe_packet,
)
from tests.support.postgres import fresh_database, postgres_server
from tests.support.waits import eventually, eventually_async
from tools.cluster import Cluster
from tools.cluster.hubrun import auth_port, auth_url
from tools.cluster.mgmt import get as mgmt_get
from tools.cluster.nodes import RABBITMQ_BIN

pytestmark = [
    pytest.mark.skipif(
        not (RABBITMQ_BIN / "rabbitmq-server").exists(),
        reason="rabbitmq-server is not installed (tools/bootstrap.sh installs it)",
    ),
    pytest.mark.timeout(scaled(300)),
]

RAW_DEVICES = ("dev-a", "dev-b", "dev-c", "dev-q", "dev-off")
FIRMWARE = ("fw-1", "fw-2")


@dataclass
class Env:
    cluster: Cluster
    hub: ClusterHub  # serves the nodes' auth backend
    store: str
    tmp: Path
    data_b: Path
    secrets: dict[str, str]
    admin: str  # an admin token
    others: list[ClusterHub] = field(default_factory=list)

    def token(self, *args: str) -> str:
        result = hub_cli(self.hub.data_dir, "token", "create", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    async def device(self, device_id: str, node: int) -> RawClient:
        client = await RawClient.tcp("127.0.0.1", self.cluster.mqtt_ports[node])
        code = await client.connect(
            device_id, username=device_id, password=self.secrets[device_id]
        )
        assert code == (False, 0), f"{device_id} refused: {code}"
        return client


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cluster-mode")
    data_a, data_b = tmp / "hub-a", tmp / "hub-b"
    secrets = {}
    for device_id in RAW_DEVICES + FIRMWARE:
        result = hub_cli(data_a, "device", "add", device_id, "--allow-insecure")
        assert result.returncode == 0, result.stderr
        secrets[device_id] = json.loads(result.stdout)["password"]
    assert hub_cli(data_a, "device", "disable", "dev-off").returncode == 0
    shutil.copytree(data_a, data_b)  # a second hub: the same registry and keys, its own dir
    port = auth_port()
    with (
        Cluster(nodes=3, base=tmp / "rabbit", auth_url=auth_url(port)) as cluster,
        postgres_server() as server,
    ):
        store = fresh_database(server)
        hub = ClusterHub(cluster, data_a, port, store, tmp / "hub-a.log")
        env = Env(cluster, hub, store, tmp, data_b, secrets, "")
        env.admin = env.token("--subscribe", "#", "--admin")
        try:
            yield env
        finally:
            for one in [hub, *env.others]:
                one.stop()


def test_ready_line_names_the_cluster_and_no_mqtt_port_of_the_hub(env: Env) -> None:
    """In cluster mode the hub's ready line names node 1's MQTT and Web MQTT listeners (the
    hub binds no MQTT port) and the hub's own console."""
    ends = env.hub.endpoints
    assert ends.mqtt == ("127.0.0.1", env.cluster.mqtt_ports[0])
    assert ends.ws == ("127.0.0.1", env.cluster.ws_ports[0])
    assert ends.http[1] not in env.cluster.mqtt_ports + env.cluster.ws_ports


def test_device_on_node_1_reaches_a_browser_on_node_3_and_the_store(env: Env) -> None:
    """A device's reading published on node 1 reaches a token's Web MQTT client on node 3
    (`/ws`) and one on the hub's own `/mqtt` (relayed to a node, as the console's pages
    connect), and the hub stores it in PostgreSQL."""

    async def body() -> None:
        token = env.token("--subscribe", "d/+/t/+")
        url = f"ws://127.0.0.1:{env.cluster.ws_ports[2]}{env.cluster.ws_path}"
        browser = await RawClient.websocket(url)
        assert await browser.connect("browser-1", username="token", password=token) == (False, 0)
        assert await browser.subscribe([("d/+/t/+", 1)]) == [1]
        host, port = env.hub.endpoints.http
        page = await RawClient.websocket(f"ws://{host}:{port}/mqtt")
        assert await page.connect("page-1", username="token", password=token) == (False, 0)
        assert await page.subscribe([("d/dev-a/t/+", 1)]) == [1]
        device = await env.device("dev-a", 0)
        await device.publish("d/dev-a/t/temp", b"a1,0,21.5", qos=1, timeout=scaled(10))
        for client in (browser, page):
            message = await client.next_message(timeout=scaled(10))
            assert (message.topic, message.payload) == ("d/dev-a/t/temp", b"a1,0,21.5")
        await device.disconnect()
        await browser.disconnect()
        await page.disconnect()

    asyncio.run(body())
    eventually(
        lambda: stored(env.store, "dev-a") == {"a1": [0]} or None,
        scaled(15),
        "the reading in PostgreSQL",
    )


def test_refusals_close_or_refuse_with_hub_events(env: Env) -> None:
    """A wrong secret and a disabled device are refused at CONNECT; a publish outside the
    device's rules and a subscription outside a token's scope close the connection; a reading
    that cannot be stored is dead-lettered; each is a hub event."""

    async def body() -> None:
        events = await Events.watch(env.cluster.mqtt_ports[1], env.admin, "admin-events")
        node = env.cluster.mqtt_ports[0]
        wrong = await RawClient.tcp("127.0.0.1", node)
        _, code = await wrong.connect("dev-b", username="dev-b", password="not-the-secret")
        assert code in (4, 5)
        await events.wait_for("auth_failure", client_id="dev-b", detail="wrong secret")
        off = await RawClient.tcp("127.0.0.1", node)
        _, code = await off.connect("dev-off", username="dev-off", password=env.secrets["dev-off"])
        assert code in (4, 5)
        await events.wait_for("auth_failure", client_id="dev-off", detail="disabled")
        device = await env.device("dev-b", 0)
        await device.publish("d/dev-b/t/temp", b"<script>", qos=1, timeout=scaled(10))
        await events.wait_for("malformed", topic="d/dev-b/t/temp", detail="dead-lettered")
        await device.send(publish_packet("d/dev-a/t/temp", b"a1,0,1.0", qos=1, pid=7))
        await device.expect_closed(timeout=scaled(10))
        await events.wait_for("filter_violation", name="dev-b", detail="d/dev-a/t/temp")
        token = env.token("--subscribe", "d/dev-a/t/+")
        browser = await RawClient.tcp("127.0.0.1", env.cluster.mqtt_ports[2])
        assert await browser.connect("scoped-1", username="token", password=token) == (False, 0)
        await browser.send(subscribe_packet(3, [("d/+/t/+", 0)]))
        await browser.expect_closed(timeout=scaled(10))
        await events.wait_for("filter_violation", client_id="scoped-1", detail="d/+/t/+")
        await events.close()

    asyncio.run(body())


def test_sensor_quotas_hold_on_the_nodes_with_the_embedded_brokers_events(env: Env) -> None:
    """The auth backend's topic check holds devices to the contract's sensor names and to
    32 sensors each (the default): a bad name, then a 33rd sensor, close the device's
    connection with `malformed` and `quota_exceeded` (`quota: sensors`) events; the 32 are
    stored. A publish over the nodes' max_message_size gets no PUBACK."""

    async def body() -> None:
        events = await Events.watch(env.cluster.mqtt_ports[1], env.admin, "admin-quotas")
        device = await env.device("dev-q", 2)
        await device.send(publish_packet("d/dev-q/t/Temp", b"b1,0,1.0", qos=1, pid=1))
        await device.expect_closed(timeout=scaled(10))
        await events.wait_for("malformed", device="dev-q", detail="'d/dev-q/t/Temp'")
        device = await env.device("dev-q", 2)
        for n in range(32):
            topic = f"d/dev-q/t/s{n}"
            await device.publish(topic, b"b1,%d,1.0" % n, qos=1, pid=n + 1, timeout=scaled(10))
        await device.send(publish_packet("d/dev-q/t/s32", b"b1,32,1.0", qos=1, pid=40))
        await device.expect_closed(timeout=scaled(10))
        event = await events.wait_for("quota_exceeded", device="dev-q", quota="sensors")
        assert "'s32'" in event["detail"]
        await events.close()
        device = await env.device("dev-q", 2)  # the nodes' max_message_size: 256 KiB
        await device.send(publish_packet("d/dev-q/t/s0", b"9" * 300_000, qos=1, pid=1))
        with pytest.raises((TimeoutError, ConnectionError, ConnectionClosed)):  # refused
            await device.expect_reply(PUBACK, 1, timeout=scaled(3))
        await device.close()

    asyncio.run(body())
    eventually(
        lambda: stored(env.store, "dev-q") == {"b1": list(range(32))} or None,
        scaled(15),
        "dev-q's 32 sensors' readings in PostgreSQL",
    )


def test_a_sessions_queue_keeps_the_newest_max_queued_messages(env: Env) -> None:
    """The hub's operator policy bounds each MQTT session's queue as --max-queued (1000)
    does: an offline persistent session sent 1,011 messages gets the newest 1,000."""

    async def body() -> None:
        token = env.token("--subscribe", "d/dev-q/t/+")
        port = env.cluster.mqtt_ports[1]
        reader = await RawClient.tcp("127.0.0.1", port)
        code = await reader.connect("queue-1", clean=False, username="token", password=token)
        assert code[1] == 0
        assert await reader.subscribe([("d/dev-q/t/+", 1)]) == [1]
        await reader.disconnect()
        device = await env.device("dev-q", 2)
        for seq in range(1011):  # QoS 1: a quorum queue may drop unconfirmed QoS 0 ones
            payload = b"b2,%d,1.0" % seq
            await device.publish("d/dev-q/t/s0", payload, qos=1, pid=seq + 1, timeout=scaled(10))
        await device.disconnect()
        reader = await RawClient.tcp("127.0.0.1", port)
        code = await reader.connect("queue-1", clean=False, username="token", password=token)
        assert code == (True, 0)
        got = [await reader.next_message(timeout=scaled(10)) for _ in range(1000)]
        seqs = [int(m.payload.split(b",")[1]) for m in got]
        assert seqs == list(range(11, 1011))
        await reader.recv_nothing(0.5)  # nothing older is left
        await reader.disconnect()

    asyncio.run(body())


def _queue_info(env: Env, name: str) -> dict[str, Any]:
    queue = mgmt_get(env.cluster.mgmt_ports[2], f"/api/queues/%2F/{name}", env.cluster.credentials)
    assert isinstance(queue, dict)
    return queue


def test_qos1_subscriptions_are_mirrored_and_qos0_ones_are_not(env: Env) -> None:
    """The hub's policy mirrors a QoS 1 subscription's queue (a device's commands: it must
    survive its node) on a second node, and leaves a clean session's QoS 0 one (a browser's,
    transient: it goes with its node) unmirrored, at half the nodes' CPU per SUBSCRIBE."""

    async def body() -> None:
        device = await env.device("dev-a", 0)
        assert await device.subscribe([("d/dev-a/c", 1)]) == [1]
        token = env.token("--subscribe", "d/+/t/+")
        browser = await RawClient.tcp("127.0.0.1", env.cluster.mqtt_ports[1])
        assert await browser.connect("qos0-1", username="token", password=token) == (False, 0)
        assert await browser.subscribe([("d/+/t/+", 0)]) == [0]

        def mirrored() -> dict[str, Any] | None:
            queue = _queue_info(env, "mqtt-subscription-dev-aqos1")
            return queue if queue.get("synchronised_slave_nodes") else None

        queue = await eventually_async(mirrored, scaled(15), "the device's queue mirrored")
        assert queue["durable"] is True and queue["node"] not in queue["synchronised_slave_nodes"]
        # Declared before the device's queue was seen mirrored: a policy that matched it
        # would have mirrored it by now too.
        transient = _queue_info(env, "mqtt-subscription-qos0-1qos0")
        assert transient["durable"] is False, transient
        assert not transient.get("slave_nodes") and not transient.get("synchronised_slave_nodes")
        await device.disconnect()
        await browser.disconnect()

    asyncio.run(body())


def _listed(env: Env, client_id: str) -> bool:
    creds = env.cluster.credentials
    conns = mgmt_get(
        env.cluster.mgmt_ports[1], "/api/connections?columns=client_properties", creds
    )
    assert isinstance(conns, list)
    return any((c.get("client_properties") or {}).get("client_id") == client_id for c in conns)


def test_disabling_a_device_closes_its_connection_within_a_second(env: Env) -> None:
    """`hub device disable` closes the device's connection on a node through the management
    API within a second, and its next CONNECT is refused."""

    async def body() -> None:
        device = await env.device("dev-b", 1)
        await eventually_async(
            lambda: _listed(env, "dev-b") or None,
            scaled(15),
            "the connection in the management API",
        )
        result = await asyncio.to_thread(hub_cli, env.hub.data_dir, "device", "disable", "dev-b")
        assert result.returncode == 0, result.stderr
        disabled_at = time.monotonic()
        await device.expect_closed(timeout=scaled(5))
        assert time.monotonic() - disabled_at < scaled(1.0)
        again = await RawClient.tcp("127.0.0.1", env.cluster.mqtt_ports[1])
        _, code = await again.connect("dev-b", username="dev-b", password=env.secrets["dev-b"])
        assert code in (4, 5)

    asyncio.run(body())


def _progress(env: Env, device: str) -> int:
    """How many readings of the device's current boot are stored."""
    boots = stored(env.store, device)
    return max((len(seqs) for seqs in boots.values()), default=0)


def _queue(env: Env) -> dict[str, int]:
    creds = env.cluster.credentials
    for port in env.cluster.mgmt_ports[1:]:
        try:
            queue = mgmt_get(port, "/api/queues/%2F/hub.readings", creds)
        except OSError:
            continue
        assert isinstance(queue, dict)
        return {k: int(queue.get(k) or 0) for k in ("messages", "messages_unacknowledged")}
    raise AssertionError("no management API answered")


async def _commanded(env: Env, device_id: str, node: int) -> RawClient:
    """A device that takes commands, as the firmware does: clean session, its command topic
    subscribed, then a retained ``online``."""
    client = await env.device(device_id, node)
    assert await client.subscribe([(f"d/{device_id}/c", 1)]) == [1]
    await client.publish(f"d/{device_id}/s", b"online", qos=1, retain=True, timeout=scaled(10))
    return client


def _command_status(env: Env, device_id: str, command_id: int) -> str:
    path = f"/api/devices/{device_id}/commands/{command_id}"
    return str(env.hub.api("GET", path, env.admin)["status"])


def test_node_and_hub_lost_while_firmware_publishes_nothing_lost(env: Env) -> None:
    """Firmware devices on node 1, two hubs consuming: node 1 SIGKILLed, the devices fail
    over; commands sent right after the kill, while the hub still counts their devices
    online, reach them once after they reconnected elsewhere (a firmware device, and one
    that comes back only once the hub has seen the node down); then one hub SIGKILLed, the
    other keeps consuming. Every reading is stored exactly once: 0 missing, 0 duplicated by
    (device, boot, seq). A client of node 1 that does not reconnect is reported lost
    (`node_lost`): a crashed node sends no will and no close event."""
    second = ClusterHub(env.cluster, env.data_b, 0, env.store, env.tmp / "hub-b.log")
    env.others.append(second)
    devices: list[Device] = []
    loop = asyncio.new_event_loop()
    events = loop.run_until_complete(
        Events.watch(env.cluster.mqtt_ports[1], env.admin, "admin-failover")
    )
    quiet = loop.run_until_complete(env.device("dev-a", 0))  # stays down once node 1 dies
    late = loop.run_until_complete(_commanded(env, "dev-c", 0))  # back only much later
    try:
        eventually(
            lambda: (
                env.hub.api("GET", "/api/devices/dev-c", env.admin).get("status") == "online"
                or None
            ),
            scaled(15),
            "dev-c online for the hub",
        )
        for device_id in FIRMWARE:
            devices.append(
                start_firmware(
                    env.tmp / "fw", device_id, env.secrets[device_id], env.cluster.mqtt_ports
                )
            )
        for device_id in FIRMWARE:
            eventually(
                lambda d=device_id: _progress(env, d) >= 3 or None,
                scaled(60),
                f"{device_id}'s first readings stored",
            )
        before = {d: _progress(env, d) for d in FIRMWARE}
        env.cluster.kill(0)
        sent = {
            device_id: env.hub.api(
                "POST", f"/api/devices/{device_id}/commands?wait=0", env.admin, {"op": "ping"}
            )
            for device_id in ("fw-1", "dev-c")
        }
        assert sent["dev-c"]["online"] is True  # the hub does not know yet
        loop.run_until_complete(late.expect_closed(timeout=scaled(10)))
        for device_id in FIRMWARE:
            eventually(
                lambda d=device_id: _progress(env, d) >= before[d] + 4 or None,
                scaled(60),
                f"{device_id}'s readings after node 1 died",
            )
        eventually(
            lambda: _command_status(env, "fw-1", sent["fw-1"]["id"]) == "replied" or None,
            scaled(20),
            "fw-1's reply to the command sent right after the kill",
        )
        # dev-c comes back on node 2 long after the command went nowhere.
        late = loop.run_until_complete(_commanded(env, "dev-c", 1))
        command = loop.run_until_complete(late.next_message(timeout=scaled(15)))
        assert command.topic == "d/dev-c/c"
        assert json.loads(command.payload) == {"op": "ping", "id": sent["dev-c"]["id"]}
        loop.run_until_complete(
            late.publish("d/dev-c/r", command.payload, qos=1, timeout=scaled(10))
        )
        eventually(
            lambda: _command_status(env, "dev-c", sent["dev-c"]["id"]) == "replied" or None,
            scaled(15),
            "dev-c's reply recorded",
        )
        loop.run_until_complete(events.wait_for("disconnected", name="dev-a", reason="node_lost"))
        # Once: the next command dev-c gets (10 s after the kill) is a new one.
        marker = env.hub.api(
            "POST", "/api/devices/dev-c/commands?wait=0", env.admin, {"op": "read"}
        )
        command = loop.run_until_complete(late.next_message(timeout=scaled(15)))
        assert json.loads(command.payload)["id"] == marker["id"]
        assert not [
            e for e in events.seen if e.get("reason") == "node_lost" and e.get("name") in FIRMWARE
        ]
        second.stop(signal.SIGKILL)
        after = {d: _progress(env, d) for d in FIRMWARE}
        for device_id in FIRMWARE:
            eventually(
                lambda d=device_id: _progress(env, d) >= after[d] + 4 or None,
                scaled(60),
                f"{device_id}'s readings after a hub died",
            )
    finally:
        for device in devices:
            device.kill()
        loop.run_until_complete(quiet.close())
        loop.run_until_complete(late.close())
        loop.run_until_complete(events.close())
        loop.close()
    eventually(
        lambda: _queue(env) == {"messages": 0, "messages_unacknowledged": 0} or None,
        scaled(30),
        "the readings queue drained",
    )
    for device_id in FIRMWARE:
        boots = stored(env.store, device_id)
        assert boots, f"{device_id} stored nothing"
        for boot, seqs in boots.items():
            assert seqs == list(range(len(seqs))), f"{device_id} boot {boot}: gaps in {seqs}"

"""Real clients interoperate: Mosquitto's command-line clients and the paho-mqtt library."""

import asyncio
import queue
import shutil
import subprocess
import threading

import paho.mqtt.client as paho
import pytest

from tests.support.hubproc import HubProcess, scaled
from tests.support.networks import WAIT, Network

CLIENT_TIMEOUT_S = scaled(10)


def _mosquitto_pub(hub: HubProcess, topic: str, message: str, *options: str) -> None:
    """Publishes one message with mosquitto_pub (MQTT 3.1.1 over TCP); it must succeed."""
    cmd = ["mosquitto_pub", "-V", "mqttv311", "-h", hub.host, "-p", str(hub.mqtt_port)]
    cmd += ["-t", topic, "-m", message, *options]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr


@pytest.fixture(autouse=True)
def _mosquitto_clients() -> None:
    if shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None:
        pytest.fail("mosquitto_pub/mosquitto_sub are missing: run tools/bootstrap.sh")


def test_mosquitto_pub_and_sub_exchange_messages(shared_hub: HubProcess, tag: str) -> None:
    """mosquitto_sub gets a retained message on subscribing, then mosquitto_pub's QoS 1 and 2."""
    _mosquitto_pub(shared_hub, f"{tag}/ready", "retained", "-q", "1", "-r")
    cmd = [
        "mosquitto_sub",
        "-V",
        "mqttv311",
        "-h",
        shared_hub.host,
        "-p",
        str(shared_hub.mqtt_port),
    ]
    cmd += ["-v", "-q", "2", "-C", "3", "-t", f"{tag}/#", "-W", str(round(CLIENT_TIMEOUT_S))]
    sub = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    try:
        # mosquitto_sub prints (and flushes) each message: the retained one means it subscribed
        assert sub.stdout.readline() == f"{tag}/ready retained\n"
        _mosquitto_pub(shared_hub, f"{tag}/a", "hello", "-q", "1")
        _mosquitto_pub(shared_hub, f"{tag}/b", "world", "-q", "2")
        out, err = sub.communicate(timeout=CLIENT_TIMEOUT_S)
    finally:
        sub.kill()
        sub.wait()
        _mosquitto_pub(shared_hub, f"{tag}/ready", "", "-r")  # clear the retained message
    assert (sub.returncode, out) == (0, f"{tag}/a hello\n{tag}/b world\n"), err


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_paho_client_interoperates(shared_hub: HubProcess, tag: str, transport: str) -> None:
    """paho-mqtt (TCP or WebSocket) gets mosquitto_pub's message and reaches a raw client."""
    received: queue.Queue[paho.MQTTMessage] = queue.Queue()
    connected, subscribed = threading.Event(), threading.Event()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=f"{tag}-paho",
        protocol=paho.MQTTv311,
        transport="websockets" if transport == "ws" else "tcp",
        reconnect_on_failure=False,
    )
    client.on_connect = lambda c, u, flags, rc, props: connected.set() if rc == 0 else None
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
    client.on_message = lambda c, u, msg: received.put(msg)
    if transport == "ws":
        client.ws_set_options(path="/mqtt")
        port = shared_hub.ws_port
    else:
        port = shared_hub.mqtt_port
    client.connect(shared_hub.host, port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(CLIENT_TIMEOUT_S), "paho did not connect"
        client.subscribe(f"{tag}/to-paho", qos=1)
        assert subscribed.wait(CLIENT_TIMEOUT_S), "paho did not get its SUBACK"
        _mosquitto_pub(shared_hub, f"{tag}/to-paho", "from mosquitto", "-q", "1")
        msg = received.get(timeout=CLIENT_TIMEOUT_S)
        assert (msg.topic, msg.payload, msg.qos) == (f"{tag}/to-paho", b"from mosquitto", 1)

        async def raw_side() -> None:
            raw = await Network(shared_hub, transport).client(f"{tag}-raw")
            assert await raw.subscribe([(f"{tag}/from-paho", 2)]) == [2]
            info = client.publish(f"{tag}/from-paho", b"from paho", qos=2)
            got = await raw.next_message(WAIT, ack=False)
            assert (got.payload, got.qos) == (b"from paho", 2)
            await raw.complete_qos2(got.pid or 0, WAIT)
            await asyncio.to_thread(info.wait_for_publish, CLIENT_TIMEOUT_S)
            assert info.is_published()
            await raw.disconnect()

        asyncio.run(raw_side())
    finally:
        client.disconnect()
        client.loop_stop()

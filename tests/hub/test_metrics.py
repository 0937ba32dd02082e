"""/metrics against the real hub: scraped and parsed with prometheus_client's own parser while
a device publishes; the counters move with the traffic; who may read it."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hub.metrics import KIND_CACHE, KIND_CACHE_TOPIC_MAX, Observed, topic_kind
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled, start_hub
from tests.support.mqtt import RawClient
from tests.support.waits import eventually_async


def token(data: Path, *args: str) -> str:
    result = hub_cli(data, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def get(hub: HubProcess, bearer: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of GET /metrics."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    request = urllib.request.Request(f"{hub.http_url}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            body = response.read().decode()
            return response.status, response.headers["Content-Type"], body
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, as prometheus_client parses it."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: Samples, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def publish(hub: HubProcess, device: str, password: str, seqs: range) -> RawClient:
    client = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await client.connect(device, username=device, password=password)
    assert code == 0
    for seq in seqs:
        await client.publish(
            f"d/{device}/t/temp",
            b"b00f,%d,21.5" % seq,
            qos=1,
            pid=seq % 60000 + 1,
            timeout=scaled(5),
        )
    return client


async def bad_login(hub: HubProcess) -> None:
    client = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await client.connect("nobody", username="nobody", password="wrong")
    assert code != 0
    await client.close()


async def traffic_and_scrapes(hub: HubProcess, password: str, admin: str, before: Samples) -> None:
    client = await publish(hub, "m-1", password, range(25))
    await bad_login(hub)

    async def scrape() -> Samples:
        return samples((await asyncio.to_thread(get, hub, admin))[2])

    async def moved() -> Samples:
        now = await scrape()
        stored = value(now, "hub_readings_stored_total")
        assert stored - value(before, "hub_readings_stored_total") == 25, stored
        return now

    after = await eventually_async(moved, 10, "the 25 readings in hub_readings_stored_total")
    routed = value(after, "hub_messages_routed_total", kind="telemetry")
    assert routed - value(before, "hub_messages_routed_total", kind="telemetry") == 25
    grew = value(after, "hub_message_payload_bytes_total", kind="telemetry") - value(
        before, "hub_message_payload_bytes_total", kind="telemetry"
    )
    assert grew == sum(len(b"b00f,%d,21.5" % seq) for seq in range(25))
    assert value(after, "hub_mqtt_connections", network="mqtt", state="connected") == 1
    assert value(after, "hub_mqtt_connects_total", network="mqtt") >= 1
    assert value(after, "hub_auth_failures_total", source="mqtt") >= 1
    assert value(after, "hub_refused_messages_total", reason="auth_failure") >= 1
    assert value(after, "hub_store_write_seconds_count") > value(
        before, "hub_store_write_seconds_count"
    )
    # The broker's own counters: 25 QoS 1 PUBLISHes in, at least their bytes (and the
    # PUBACKs out), one clean session held.
    received = value(after, "hub_mqtt_messages_received_total", qos="1") - value(
        before, "hub_mqtt_messages_received_total", qos="1"
    )
    assert received == 25
    bytes_in = value(after, "hub_mqtt_received_bytes_total") - value(
        before, "hub_mqtt_received_bytes_total"
    )
    assert bytes_in >= sum(len(b"d/m-1/t/tempb00f,%d,21.5" % seq) + 6 for seq in range(25))
    bytes_out = value(after, "hub_mqtt_sent_bytes_total") - value(
        before, "hub_mqtt_sent_bytes_total"
    )
    assert bytes_out >= 25 * 4  # the PUBACKs
    assert value(after, "hub_mqtt_sessions", kind="clean") == 1
    assert value(after, "hub_mqtt_sessions", kind="persistent") == 0
    await client.disconnect()

    async def gone() -> bool:
        now = await scrape()
        assert value(now, "hub_mqtt_connections", network="mqtt", state="connected") == 0
        return value(now, "hub_mqtt_disconnects_total", reason="clean") >= 1

    await eventually_async(gone, 10, "the connection gauge back to 0 after a clean disconnect")


def test_counters_move_with_the_traffic(tmp_path: Path) -> None:
    """An admin token scrapes /metrics in the text format prometheus_client parses; readings,
    routed messages and bytes, connections, auth failures and the store histogram move as a
    device publishes and a stranger fails to log in."""
    hub = start_hub(tmp_path / "data", secure=True)
    try:
        creds = provision(hub, "m-1")
        admin = token(hub.data_dir, "--admin")
        status, ctype, before_text = get(hub, admin)
        assert status == 200, before_text
        assert ctype.startswith("text/plain") and "version=" in ctype
        before = samples(before_text)
        for name in (
            "hub_readings_stored_total",
            "hub_store_queue_depth",
            "hub_retained_messages",
            "hub_alarms_active",
            "hub_mqtt_queued_messages",
            "hub_mqtt_inflight_messages",
            "process_resident_memory_bytes",
        ):
            assert any(key[0] == name for key in before), name

        asyncio.run(traffic_and_scrapes(hub, creds["password"], admin, before))
    finally:
        hub.stop()


def test_metrics_need_an_admin_unless_public(tmp_path: Path) -> None:
    """Without a token /metrics is 401, with a viewer's token 403, with a broken one 401;
    with metrics_public anyone may scrape it, and it has every metric the shipped Grafana
    dashboard queries."""
    hub = start_hub(tmp_path / "data", secure=True)
    try:
        assert get(hub)[0] == 401
        viewer = token(hub.data_dir, "--subscribe", "d/+/t/+")
        assert get(hub, viewer)[0] == 403
        assert get(hub, "not-a-token")[0] == 401
    finally:
        hub.stop()
    public = start_hub(tmp_path / "data", "--metrics-public", secure=True)
    try:
        status, _, body = get(public)
        assert status == 200
        assert "hub_readings_stored_total" in body
        named = set()
        for family in text_string_to_metric_families(body):
            named |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
        dashboard = (Path(__file__).parents[2] / "contrib/grafana/hub.json").read_text()
        used = set(re.findall(r"\b((?:hub|process)_[a-z_]+)", dashboard))
        assert used and used <= named, used - named
    finally:
        public.stop()


def test_topic_kinds_never_name_a_device() -> None:
    """The messages counter's label is a topic kind from a fixed set, whatever the topic."""
    assert topic_kind("d/kitchen/t/temp") == "telemetry"
    assert topic_kind("d/kitchen/s") == "status"
    assert topic_kind("d/kitchen/m") == "health"
    assert topic_kind("d/kitchen/c") == "command"
    assert topic_kind("$hub/events/device/x/info") == "event"
    assert topic_kind("d/kitchen/zz/evil") == "other"
    assert topic_kind("anything/else") == "other"
    assert topic_kind("d") == "other"


def test_the_message_counter_remembers_a_bounded_number_of_topic_kinds() -> None:
    """Messages are counted by kind and bytes; the topic -> kind cache keeps short topics
    only and never more than KIND_CACHE of them, however many topics a client invents."""
    observed = Observed()
    for n in range(KIND_CACHE + 10):
        observed.on_message(f"d/dev{n}/t/temp", b"1,2,3")
    observed.on_message("d/kitchen/s", b"online")
    observed.on_message("x" * (KIND_CACHE_TOPIC_MAX + 1), b"")
    assert observed.messages == {"telemetry": KIND_CACHE + 10, "status": 1, "other": 1}
    assert observed.payload_bytes["telemetry"] == 5 * (KIND_CACHE + 10)
    assert 0 < len(observed.kinds) <= KIND_CACHE
    assert "x" * (KIND_CACHE_TOPIC_MAX + 1) not in observed.kinds

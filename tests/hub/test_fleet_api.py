"""The fleet console's HTTP API against the real hub: the fleet list (paging, counts, search,
filters, sort), one device, and each device's state surviving a hub restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.hub.fleet import admin_token, call, get, health, poll, raw_device, until
from tests.support.hubproc import HubProcess, hub_cli, provision, start_hub
from tests.support.postgres import fresh_database


def test_fleet_pages_counts_searches_filters_and_sorts(tmp_path: Path) -> None:
    """Devices in each state are counted over the whole fleet; q, state, board, fw and tls
    filter the total; limit and offset page it; sort orders by id or last message."""
    hub = start_hub(tmp_path / "data")
    try:
        admin = admin_token(hub)
        for device in ("reg-never", "reg-b"):
            args = (
                ["device", "add", device, "--allow-insecure"]
                if device == "reg-b"
                else ["device", "add", device]
            )
            assert hub_cli(hub.data_dir, *args).returncode == 0

        async def scenario() -> None:
            online = [
                await raw_device(hub, f"kitchen-{i}", meta=health(fw=f"0.{i % 2}"))
                for i in range(5)
            ]
            sleeper = await raw_device(
                hub, "garden-1", status=b"asleep", meta=health(board="lolin-d32")
            )
            await sleeper.disconnect()
            gone = await raw_device(hub, "shed-1")
            await gone.close()  # no DISCONNECT: the will says offline

            def settled() -> object:
                fleet = get(hub, "/api/fleet?limit=500", admin)
                return fleet if fleet["counts"]["offline"] == 1 else None

            fleet = await poll(settled, what="shed-1 offline")
            await online[3].publish("d/kitchen-3/t/temp", b"aa,1,21.5", qos=1)
            assert fleet["counts"] == {
                "online": 5,
                "offline": 1,
                "asleep": 1,
                "never": 2,
                "alarm": 0,
                "all": 9,
            }
            assert fleet["total"] == 9 and [d["id"] for d in fleet["devices"]] == sorted(
                d["id"] for d in fleet["devices"]
            )
            assert fleet["boards"] == ["esp32-devkitc", "lolin-d32"]
            assert fleet["firmware"] == ["0.0", "0.1", "0.1.0"]
            page = get(hub, "/api/fleet?offset=2&limit=3", admin)
            assert (page["total"], page["offset"], page["limit"]) == (9, 2, 3)
            assert [d["id"] for d in page["devices"]] == ["kitchen-1", "kitchen-2", "kitchen-3"]
            kitchen = get(hub, "/api/fleet?q=itchen&state=online&fw=0.1", admin)
            assert [d["id"] for d in kitchen["devices"]] == ["kitchen-1", "kitchen-3"]
            assert kitchen["counts"]["all"] == 9 and kitchen["total"] == 2
            never = get(hub, "/api/fleet?state=never", admin)["devices"]
            assert [(d["id"], d["status"], d["last_seen"]) for d in never] == [
                ("reg-b", None, None),
                ("reg-never", None, None),
            ]
            insecure = get(hub, "/api/fleet?tls=allow-insecure", admin)["devices"]
            assert [d["id"] for d in insecure] == ["reg-b"]
            board = get(hub, "/api/fleet?board=lolin-d32", admin)["devices"]
            assert [(d["id"], d["status"]) for d in board] == [("garden-1", "asleep")]
            newest = get(hub, "/api/fleet?sort=-last_seen&limit=1", admin)["devices"][0]
            assert newest["id"] == "kitchen-3"
            assert newest["sensors"]["temp"]["value"] == 21.5 and newest["boot"] == "aa"
            oldest = get(hub, "/api/fleet?sort=last_seen", admin)["devices"]
            assert oldest[0]["id"] == "kitchen-0" and oldest[-1]["last_seen"] is None
            one = get(hub, "/api/devices/kitchen-1", admin)
            assert one == next(d for d in fleet["devices"] if d["id"] == "kitchen-1")
            assert one["health"]["fw"] == "0.1" and one["alarms"] == 0
            assert call(hub, "/api/devices/ghost", admin)[0] == 404
            for bad in (
                "state=lost",
                "sort=name",
                "limit=501",
                "offset=-1",
                "tls=maybe",
                "colour=red",
                "limit=2.5",
            ):
                assert call(hub, "/api/fleet?" + bad, admin)[0] == 400, bad
            for client in online:
                await client.close()

        asyncio.run(scenario())
    finally:
        hub.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_state_survives_a_restart(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """After a hub restart the API serves each device's last status, health, boot, firmware,
    board, readings and last message before the device reconnects (on either store)."""
    data = tmp_path / "data"
    store: list[str] = []
    if backend == "postgresql":
        store = ["--store", fresh_database(request.getfixturevalue("postgres_url"))]
    hub = start_hub(data, *store)
    admin = admin_token(hub)

    async def before() -> None:
        awake = await raw_device(hub, "awake-1", meta=health(fw="1.2.3", heap=1234))
        await awake.publish("d/awake-1/t/temp", b"b0,7,19.5", qos=1)
        sleeper = await raw_device(hub, "sleeper-1", status=b"asleep", meta=health())
        await sleeper.disconnect()
        await poll(lambda: get(hub, "/api/devices/sleeper-1", admin)["status"] == "asleep")
        await awake.close()

    try:
        asyncio.run(before())
        seen = get(hub, "/api/devices/awake-1", admin)
        assert seen["sensors"]["temp"]["value"] == 19.5
    finally:
        hub.stop()
    hub = start_hub(data, *store)
    try:
        after = get(hub, "/api/devices/awake-1", admin)
        assert (after["fw"], after["board"], after["health"]["heap"]) == (
            "1.2.3",
            "esp32-devkitc",
            1234,
        )
        assert after["sensors"] == seen["sensors"] and after["boot"] == "b0"
        assert after["last_seen"] >= seen["last_seen"]
        # It was online when the hub stopped; the hub cannot know it still is.
        assert after["status"] == "offline"
        sleeper = get(hub, "/api/devices/sleeper-1", admin)
        assert sleeper["status"] == "asleep" and sleeper["health"]["fw"] == "0.1.0"
        counts = get(hub, "/api/fleet", admin)["counts"]
        assert (counts["asleep"], counts["offline"], counts["all"]) == (1, 1, 2)
    finally:
        hub.stop()


def test_device_events_and_last_seen_of_a_registered_device(secure_hub: HubProcess) -> None:
    """A registered device's connect and disconnect are in its history, and its last message
    is its last_seen (later than the connect)."""
    creds = provision(secure_hub, "reg-1")
    admin = admin_token(secure_hub)

    async def scenario() -> None:
        device = await raw_device(
            secure_hub, "reg-1", username="reg-1", password=creds["password"]
        )
        await device.publish("d/reg-1/t/temp", b"c1,0,1.5", qos=1)
        await device.disconnect()

        def history() -> object:
            events = get(secure_hub, "/api/devices/reg-1/history", admin)["events"]
            return (
                events
                if [e["event"] for e in events][:2] == ["disconnected", "connected"]
                else None
            )

        events = await poll(history, what="connect and disconnect in the history")
        assert events[0]["reason"] == "clean" and events[0]["time"] >= events[1]["time"]
        state = get(secure_hub, "/api/devices/reg-1", admin)
        assert state["status"] == "offline" and state["registered"] is True
        assert state["last_seen"] >= events[1]["time"]

    asyncio.run(scenario())


def test_series_and_health_over_http(hub: HubProcess) -> None:
    """The series endpoint returns a sensor's readings raw when few and in buckets when more
    than `points` (counts adding up); the health endpoint returns the health rows."""
    admin = admin_token(hub)

    async def scenario() -> None:
        device = await raw_device(hub, "chart-1", meta=health(heap=4242))
        for seq in range(6):
            await device.publish("d/chart-1/t/temp", b"ab,%d,%d.5" % (seq, seq), qos=1)
        await device.publish("d/chart-1/t/hum", b"ab,6,40.0", qos=1)
        await device.close()

    asyncio.run(scenario())
    raw = get(hub, "/api/devices/chart-1/series?sensor=temp", admin)
    assert raw["bucket_s"] == 0 and set(raw["series"]) == {"temp"}
    assert raw["series"]["temp"]["mean"] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert raw["until"] - raw["since"] == 86400
    since = raw["series"]["temp"]["t"][0] - 1
    coarse = get(hub, f"/api/devices/chart-1/series?since={since}&points=2", admin)
    temp = coarse["series"]["temp"]
    assert coarse["bucket_s"] > 0 and sum(temp["n"]) == 6 and len(temp["t"]) <= 2
    assert min(temp["min"]) == 0.5 and max(temp["max"]) == 5.5
    assert coarse["series"]["hum"]["n"] == [1]
    # Health rows are written in batches (once a second).
    rows = until(lambda: (h := get(hub, "/api/devices/chart-1/health", admin))["t"] and h)
    assert rows["heap"] == [4242] and rows["bucket_s"] == 0 and len(rows["t"]) == 1

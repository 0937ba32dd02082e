"""Desired state end to end: real firmware on the unix port and a real hub deliver deltas to
online, offline and sleeping devices, with group inheritance, overrides and rollbacks."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

from hub import topics
from tests.support.devices import Device, running_device
from tests.support.durable import Events
from tests.support.firmware import FAST, Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled, start_hub
from tests.support.waits import eventually_async
from tools import mpunix


def cli(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def settings_sent(sub: Subscriber) -> list[dict[str, Any]]:
    """The settings commands the hub sent the device, in order."""
    out = []
    for msg in sub.on(topics.command_topic(sub.device)):
        if msg.payload[:1] == b"{":
            body = json.loads(msg.payload)
            if body.get("op") == "settings":
                out.append(body)
    return out


def stored(device: Device) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((device.folder / "settings.json").read_text())
    return data


def events_of(events: Events, kind: str, device: str) -> list[dict[str, Any]]:
    return [e for e in events.seen if e["event"] == kind and e.get("name") == device]


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_after_online(sub: Subscriber) -> bool:
    """The device's last message on status or health is a health (sent after online)."""
    mine = (topics.status_topic(sub.device), topics.meta_topic(sub.device))
    last = [m for _, m in sub.messages if m.topic in mine]
    return bool(last) and last[-1].topic == mine[1]


def show(hub: HubProcess, device: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(hub, "desired", "show", device))
    return data


def test_online_device_gets_only_the_delta_and_reports_it_applied(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A change to an online device's desired state goes as one settings command holding
    only what differs; the device's trial applies it and the hub marks it applied."""

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        sub = await Subscriber.start(hub, "des-1")
        with running_device(tmp_path, hub, "des-1", **FAST) as device:
            await sub.wait_until(lambda: sub.on(topics.meta_topic("des-1")), scaled(20), "health")
            cli(hub, "desired", "set", "des-1", "meta_s=600", "period_s=2")
            await sub.wait_until(
                lambda: events_of(events, "desired_applied", "des-1"), scaled(30), "applied"
            )
            assert stored(device)["meta_s"] == 600 and stored(device)["period_s"] == 2
            (sent,) = settings_sent(sub)
            assert sent["set"] == {"meta_s": 600, "period_s": 2}
            # Only what changed goes the next time.
            cli(hub, "desired", "set", "des-1", "period_s=3")
            await sub.wait_until(
                lambda: len(events_of(events, "desired_applied", "des-1")) == 2,
                scaled(30),
                "the second change applied",
            )
            assert settings_sent(sub)[1]["set"] == {"period_s": 3}
            assert stored(device)["period_s"] == 3
            assert device.poll() is None, device.log()
        state = show(hub, "des-1")
        assert state["delta"] == {}
        assert state["reported"]["settings"] == {"meta_s": 600, "period_s": 3}
        assert state["outcome"]["state"] == "applied"
        changed = events_of(events, "desired_changed", "des-1")
        assert [e["keys"] for e in changed] == ["meta_s,period_s", "period_s"]
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_offline_device_gets_group_state_with_its_override_when_it_connects(
    hub: HubProcess, tmp_path: Path
) -> None:
    """Desired state set while a device is offline (from a label group, a board group and its
    own override) reaches it when it comes online: one command, the precedence applied."""
    cli(hub, "device", "add", "des-2", "--allow-insecure")
    cli(hub, "device", "label", "des-2", "add", "barn")
    cli(hub, "group", "add", "barn", "--label", "barn", "--priority", "5")
    cli(hub, "group", "add", "sims", "--board", "unix-sim")
    cli(hub, "desired", "set", "--group", "barn", "meta_s=500", "queue_len=64")
    cli(hub, "desired", "set", "--group", "sims", "meta_s=900", "ack_timeout_s=3")

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        cli(hub, "desired", "set", "des-2", "queue_len=32")  # the last write
        # The running hub has read every document (it polls the store) before the device comes:
        # an event naming its own document's first version follows the last write.
        await eventually_async(
            lambda: [e for e in events_of(events, "desired_changed", "des-2") if e["version"]],
            scaled(10),
            "desired_changed of des-2's own document",
        )
        sub = await Subscriber.start(hub, "des-2")
        # The hub learns the board from the device's first health, then sends the delta.
        with running_device(tmp_path, hub, "des-2", **FAST) as device:
            await sub.wait_until(
                lambda: events_of(events, "desired_applied", "des-2"), scaled(40), "applied"
            )
            assert device.poll() is None, device.log()
            settings = stored(device)
        # One command (the hub may send it again with its id when the device's trial reboot
        # hides the reply: the device answers a repeated id without running it again).
        commands = {c["id"]: c for c in settings_sent(sub)}
        assert len(commands) == 1, settings_sent(sub)
        (sent,) = commands.values()
        assert sent["set"] == {"meta_s": 500, "queue_len": 32, "ack_timeout_s": 3}
        assert (settings["meta_s"], settings["queue_len"], settings["ack_timeout_s"]) == (
            500,
            32,
            3,
        )
        state = show(hub, "des-2")
        assert state["groups"] == ["barn", "sims"]
        assert state["sources"] == {
            "meta_s": "group:barn",
            "ack_timeout_s": "group:sims",
            "queue_len": "device",
        }
        assert state["delta"] == {}
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_sleeping_device_gets_its_delta_when_it_wakes(hub: HubProcess, tmp_path: Path) -> None:
    """A change made while a deep-sleep device sleeps reaches it at its next wake; the wake
    after that runs the new settings and answers, and the hub marks them applied."""
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board["deep_sleep_s"] = 2

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        sub = await Subscriber.start(hub, "nap-2")
        status = topics.status_topic("nap-2")
        with running_device(tmp_path, hub, "nap-2", board_json=board, **FAST) as device:
            await sub.wait_until(
                lambda: any(m.payload == topics.STATUS_ASLEEP for m in sub.on(status)),
                scaled(20),
                "the device asleep",
            )
            cli(hub, "desired", "set", "nap-2", "meta_s=700")
            await sub.wait_until(
                lambda: events_of(events, "desired_applied", "nap-2"), scaled(40), "applied"
            )
            assert stored(device)["meta_s"] == 700
            assert set(device.exits) == {mpunix.EXIT_DEEPSLEEP}, device.log()
        # Sent while the device was awake but past listening, it goes again at the next wake.
        assert [c["set"] for c in settings_sent(sub)][-1] == {"meta_s": 700}
        assert show(hub, "nap-2")["delta"] == {}
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_sleeping_device_rolls_back_a_setting_it_cannot_connect_with(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A deep-sleep device given a hub_port nothing listens on tries it for three wakes, then
    wakes with its old settings and answers; the hub raises desired_failed."""
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board["deep_sleep_s"] = 2
    dead = free_port()

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        sub = await Subscriber.start(hub, "nap-3")
        status = topics.status_topic("nap-3")
        with running_device(tmp_path, hub, "nap-3", board_json=board, **FAST) as device:
            await sub.wait_until(
                lambda: any(m.payload == topics.STATUS_ASLEEP for m in sub.on(status)),
                scaled(20),
                "the device asleep",
            )
            before = stored(device)
            cli(hub, "desired", "set", "nap-3", f"hub_port={dead}")
            failed = await sub.wait_until(
                lambda: events_of(events, "desired_failed", "nap-3"), scaled(60), "failed"
            )
            assert "rolled back: no connection with the new settings" in failed[0]["reason"]
            assert stored(device) == before
            assert set(device.exits) == {mpunix.EXIT_DEEPSLEEP}, device.log()
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_setting_the_device_rolls_back_is_reported_failed_and_not_sent_again(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A desired hub_port the device cannot connect with: its trial rolls back, the hub raises
    desired_failed with the device's reason and does not send the same values again."""
    cli(hub, "device", "add", "des-3", "--allow-insecure")
    dead = free_port()

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        sub = await Subscriber.start(hub, "des-3")
        with running_device(tmp_path, hub, "des-3", **FAST) as device:
            await sub.wait_until(lambda: sub.on(topics.meta_topic("des-3")), scaled(20), "health")
            before = stored(device)
            cli(hub, "desired", "set", "des-3", f"hub_port={dead}")
            failed = await sub.wait_until(
                lambda: events_of(events, "desired_failed", "des-3"), scaled(60), "failed"
            )
            assert "rolled back" in failed[0]["reason"]
            assert failed[0]["keys"] == "hub_port"
            assert stored(device) == before
            # The next connection brings no second attempt: the health that follows its
            # online comes after the hub has handled the online.
            onlines = len(sub.online())
            device.kill()  # a power cut, and on again
            device.start()
            await sub.wait_until(
                lambda: len(sub.online()) > onlines and health_after_online(sub),
                scaled(30),
                "back online, and its health",
            )
            assert len(settings_sent(sub)) == 1
            state = show(hub, "des-3")
            assert state["outcome"]["state"] == "failed" and state["delta"] == {"hub_port": dead}
            assert "rolled back" in state["outcome"]["error"]
            # A new desired value is tried.
            cli(hub, "desired", "set", "des-3", f"hub_port={hub.mqtt_port}")
            await sub.wait_until(
                lambda: events_of(events, "desired_applied", "des-3"), scaled(30), "applied"
            )
            assert settings_sent(sub)[-1]["set"] == {"hub_port": hub.mqtt_port}
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_desired_and_reported_state_survive_a_hub_crash(tmp_path: Path) -> None:
    """What a device reported and a change made while it was away survive SIGKILL of the hub:
    after the restart the device gets only what it still lacks."""
    data_dir = tmp_path / "data"
    hub = start_hub(data_dir)
    try:

        async def before() -> None:
            events = await Events.watch(hub.host, hub.mqtt_port)
            with running_device(tmp_path / "first", hub, "dur-2", **FAST):
                await eventually_async(
                    lambda: show(hub, "dur-2")["reported"]["board"], scaled(20), "its board"
                )
                cli(hub, "desired", "set", "dur-2", "meta_s=600")
                await eventually_async(
                    lambda: events_of(events, "desired_applied", "dur-2"), scaled(30), "applied"
                )
            await events.close()

        asyncio.run(before())
        cli(hub, "desired", "set", "dur-2", "period_s=2")  # the device is away
        hub.stop(signal.SIGKILL)
        hub = start_hub(data_dir)
        state = show(hub, "dur-2")
        assert state["version"] == 2 and state["reported"]["settings"] == {"meta_s": 600}
        assert state["delta"] == {"period_s": 2} and state["outcome"]["state"] == "applied"

        async def after() -> None:
            sub = await Subscriber.start(hub, "dur-2")
            with running_device(tmp_path / "second", hub, "dur-2", **FAST) as device:
                await sub.wait_until(lambda: settings_sent(sub), scaled(30), "the delta sent")
                await sub.wait_until(
                    lambda: show(hub, "dur-2")["delta"] == {}, scaled(30), "nothing pending"
                )
                assert stored(device)["period_s"] == 2
            assert [c["set"] for c in settings_sent(sub)] == [{"period_s": 2}]
            await sub.stop()

        asyncio.run(after())
    finally:
        hub.stop()

"""Commands on d/<id>/c, answered on d/<id>/r with the command's id, and the health topic."""

import asyncio
import json
import socket
from pathlib import Path

from hub import topics
from tests.support.devices import running_device
from tests.support.firmware import FAST, Subscriber, assert_complete
from tests.support.hubproc import HubProcess
from tests.support.mqtt import publish_packet


def command_packet(command: dict[str, object]) -> bytes:
    """A command's PUBLISH to cmd-2 (QoS 1), to send several in one write."""
    return publish_packet(topics.command_topic("cmd-2"), json.dumps(command).encode(), qos=1)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_command_is_answered(hub: HubProcess, tmp_path: Path) -> None:
    """ping, read, period, out, reboot and bad input each get a reply with the command's id."""

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "cmd-2")
        with running_device(tmp_path, hub, "cmd-2", period_s=30, **FAST) as device:
            await sub.wait_until(sub.online, 10, "online")
            assert (await sub.command({"id": 1, "op": "ping"}))["version"] == "0.1.0"
            count = len(sub.readings())
            assert (await sub.command({"id": 2, "op": "read"}))["ok"] is True
            await sub.wait_until(lambda: len(sub.readings()) > count, 5, "a reading now")
            bad = await sub.command({"id": 3, "op": "period", "s": 0})
            assert bad == {"id": 3, "ok": False, "error": bad["error"]}
            assert "1 to 86400" in bad["error"]
            assert await sub.command({"id": 4, "op": "period", "s": 1}) == {
                "id": 4,
                "ok": True,
                "s": 1,
            }
            count = len(sub.readings())
            await sub.wait_until(lambda: len(sub.readings()) >= count + 2, 5, "1 s period")
            assert await sub.command({"id": 5, "op": "out", "name": "led", "v": 1}) == {
                "id": 5,
                "ok": True,
                "name": "led",
                "v": 1,
            }
            nope = await sub.command({"id": 6, "op": "out", "name": "fan", "v": 1})
            assert not nope["ok"] and "unknown output 'fan'" in nope["error"]
            nope = await sub.command({"id": 7, "op": "out", "name": "led", "v": 7})
            assert not nope["ok"] and "'v' must be 0 or 1" in nope["error"]
            nope = await sub.command({"id": 8, "op": "fly"})
            assert nope == {"id": 8, "ok": False, "error": "unknown op 'fly'"}
            # Settings are handled by the loop's next step; two in one read (one that mentions
            # "ota", which offers are found by) are answered in order, each by its own check.
            two = [
                {"id": 20, "op": "settings", "set": {"wifi_ssid": "ota", "bogus": 1}},
                {"id": 21, "op": "settings", "set": {"period_s": 0}},
            ]
            await sub.client.send(b"".join(command_packet(c) for c in two))

            def replies() -> list[dict[str, object]]:
                found = [json.loads(m.payload) for m in sub.on(topics.reply_topic("cmd-2"))]
                return [r for r in found if r["id"] in (20, 21)]

            await sub.wait_until(lambda: len(replies()) == 2, 10, "two replies")
            first, second = replies()
            assert first["id"] == 20 and "unknown setting 'bogus'" in str(first["error"])
            assert second["id"] == 21 and "'period_s' must be a whole" in str(second["error"])
            onlines = len(sub.online())
            assert (await sub.command({"id": 9, "op": "reboot"}))["ok"] is True
            await sub.wait_until(lambda: len(sub.online()) > onlines, 10, "online again")
            await sub.wait_until(lambda: len({r.boot for r in sub.readings()}) == 2, 5, "boot 2")
            assert device.exits[0] == 75  # machine.reset()
            meta = topics.parse_meta(sub.on(topics.meta_topic("cmd-2"))[-1].payload)
            assert meta["reset"] == "soft" and meta["board"] == "unix-sim"
            assert_complete(sub.readings())
        await sub.stop()

    asyncio.run(scenario())


def test_settings_update_applies_or_rolls_back(hub: HubProcess, tmp_path: Path) -> None:
    """A valid update is kept once the device reconnects with it; one that cannot reconnect
    is rolled back; a bad one is refused and the stored settings are untouched."""

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "set-1")
        with running_device(tmp_path, hub, "set-1", period_s=30, **FAST) as device:
            stored = device.folder / "settings.json"
            original = json.loads(stored.read_text())
            await sub.wait_until(sub.online, 10, "online")
            bad = await sub.command({"id": 1, "op": "settings", "set": {"hub_prot": 1}})
            assert bad == {
                "id": 1,
                "ok": False,
                "error": "unknown setting 'hub_prot' in the update",
            }
            bad = await sub.command({"id": 2, "op": "settings", "set": {"period_s": -4}})
            assert (
                not bad["ok"]
                and "'period_s' must be a whole number from 1 to 86400" in bad["error"]
            )
            assert json.loads(stored.read_text()) == original  # nothing written
            good = await sub.command({"id": 3, "op": "settings", "set": {"meta_s": 600}}, 15)
            assert good == {"id": 3, "ok": True, "applied": True}
            assert json.loads(stored.read_text()) == {**original, "meta_s": 600}
            dead = _dead_port()
            lost = await sub.command({"id": 4, "op": "settings", "set": {"hub_port": dead}}, 20)
            assert not lost["ok"] and lost["error"].startswith("rolled back: no connection")
            assert json.loads(stored.read_text()) == {**original, "meta_s": 600}
            assert not (device.folder / "trial.json").exists()
            assert device.exits == [75, 75, 75]  # applied, tried, rolled back: three reboots
            assert (await sub.command({"id": 5, "op": "ping"}))["ok"] is True
        await sub.stop()

    asyncio.run(scenario())

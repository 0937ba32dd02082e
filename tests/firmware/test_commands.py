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


def _replies(sub: Subscriber, command_id: int) -> list[dict[str, object]]:
    """The device's replies to command_id so far, in order."""
    found = [json.loads(m.payload) for m in sub.on(topics.reply_topic(sub.device))]
    return [r for r in found if r.get("id") == command_id]


async def _nth_reply(sub: Subscriber, command: dict[str, object], n: int) -> dict[str, object]:
    """Sends command and returns the device's n-th reply to its id."""
    packet = publish_packet(topics.command_topic(sub.device), json.dumps(command).encode(), qos=1)
    await sub.client.send(packet)
    cid = int(str(command["id"]))
    await sub.wait_until(lambda: len(_replies(sub, cid)) >= n, 15, f"reply {n} to {command}")
    return _replies(sub, cid)[n - 1]


def test_a_command_sent_again_runs_once(hub: HubProcess, tmp_path: Path) -> None:
    """A command id sent twice is answered twice with the first reply and runs once (its body
    changed to tell), a reboot or settings update included across the reboot it caused; the
    oldest of more than five is forgotten; id 0 is no id and runs each time; an unreadable
    answers.json is ignored at boot."""
    folder = tmp_path / "dup-1"
    folder.mkdir()
    (folder / "answers.json").write_text('[[1, "half')  # a file a power cut cut short

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "dup-1")
        with running_device(tmp_path, hub, "dup-1", period_s=30, **FAST) as device:
            stored = device.folder / "settings.json"
            await sub.wait_until(sub.online, 10, "online")
            first = await _nth_reply(sub, {"id": 1, "op": "period", "s": 20}, 1)
            assert first == {"id": 1, "ok": True, "s": 20}
            # The same id with another body: the first reply again, the body never runs.
            assert await _nth_reply(sub, {"id": 1, "op": "period", "s": 0}, 2) == first
            refused = await _nth_reply(sub, {"id": 2, "op": "period", "s": 0}, 1)
            assert not refused["ok"]
            assert await _nth_reply(sub, {"id": 2, "op": "period", "s": 9}, 2) == refused
            # Id 0 is no id (Home Assistant's fixed payloads reuse it): each one runs.
            zero = await _nth_reply(sub, {"id": 0, "op": "period", "s": 20}, 1)
            assert zero == {"id": 0, "ok": True, "s": 20}
            assert not (await _nth_reply(sub, {"id": 0, "op": "period", "s": 0}, 2))["ok"]
            onlines = len(sub.online())
            assert await _nth_reply(sub, {"id": 3, "op": "reboot"}, 1) == {"id": 3, "ok": True}
            await sub.wait_until(lambda: len(sub.online()) > onlines, 15, "online again")
            assert device.exits == [75]
            # After the reboot: the reboot and the commands before it are answered, not run.
            assert await _nth_reply(sub, {"id": 3, "op": "reboot"}, 2) == {"id": 3, "ok": True}
            assert await _nth_reply(sub, {"id": 1, "op": "period", "s": 7}, 3) == first
            settings = {"id": 4, "op": "settings", "set": {"meta_s": 600}}
            applied = await _nth_reply(sub, settings, 1)
            assert applied == {"id": 4, "ok": True, "applied": True}
            onlines = len(sub.online())
            changed = {"id": 4, "op": "settings", "set": {"meta_s": 900}}
            assert await _nth_reply(sub, changed, 2) == applied
            assert json.loads(stored.read_text())["meta_s"] == 600
            # Neither duplicate rebooted the device: a ping is answered by the same run.
            assert (await sub.command({"id": 5, "op": "ping"}))["ok"] is True
            assert device.exits == [75, 75]  # the reboot and the settings trial, once each
            assert len(sub.online()) == onlines
            saved = json.loads((device.folder / "answers.json").read_text())
            assert [kept[0] for kept in saved] == [1, 2, 3]  # kept by the trial's reboot
            # Five newer replies push id 1 out: sent again now, it runs (and is refused).
            for cid in range(6, 10):
                assert (await sub.command({"id": cid, "op": "ping"}))["ok"] is True
            rerun = await _nth_reply(sub, {"id": 1, "op": "period", "s": 0}, 4)
            assert not rerun["ok"] and "1 to 86400" in str(rerun["error"])
        await sub.stop()

    asyncio.run(scenario())

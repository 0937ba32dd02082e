"""hub/commands.py without sockets: which commands are sent again after a cluster node's crash
(Commands.connections_lost), and that the embedded broker's rule (a command published while
its device was online is never sent again) still holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub import commands as commands_module
from hub.commands import SETTLE_S, Commands


class _Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)["id"]))


class _Recorder:
    def command(self, record: dict[str, Any]) -> None:
        pass


class _Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(commands_module.time, "time", lambda: self.now)


def _make(monkeypatch: pytest.MonkeyPatch) -> tuple[Commands, _Broker, _Clock]:
    broker = _Broker()
    return Commands(broker, _Recorder()), broker, _Clock(monkeypatch)  # type: ignore[arg-type]


ONLINE = {"status": "online"}
OFFLINE = {"status": "offline"}


def _reply(commands: Commands, device: str, command_id: int) -> None:
    commands.on_message(f"d/{device}/r", json.dumps({"id": command_id, "ok": True}).encode())


def test_a_command_sent_online_is_not_sent_again_without_a_lost_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Embedded broker: a command published while its device was online is not published
    again when the device says online again; one created while it was offline is."""
    commands, broker, clock = _make(monkeypatch)
    first = commands.create("dev", {"op": "ping"}, "t", 60, online=True)
    second = commands.create("dev", {"op": "ping"}, "t", 60, online=False)
    commands.on_state("dev", "status", ONLINE)
    clock.now += 10
    commands._resend_due(clock.now)
    sent = [("d/dev/c", first["id"]), ("d/dev/c", second["id"]), ("d/dev/c", second["id"])]
    assert broker.sent == sent


def test_a_command_published_after_the_crash_is_sent_once_the_device_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command published after its device's node died (the hub still counted it online)
    is sent again SETTLE_S after the device's next online, once; a command answered by then
    is not."""
    commands, broker, clock = _make(monkeypatch)
    clock.now += 0.5
    lost = commands.create("dev", {"op": "ping"}, "t", 60, online=True)
    answered = commands.create("dev", {"op": "read"}, "t", 60, online=True)
    commands.connections_lost(["dev", "other"], since=clock.now - 1.5)
    clock.now += 1
    commands.on_state("dev", "status", ONLINE)
    _reply(commands, "dev", answered["id"])  # reached the device after all
    commands._resend_due(clock.now + SETTLE_S - 0.1)
    assert len(broker.sent) == 2
    clock.now += SETTLE_S
    commands._resend_due(clock.now)
    assert broker.sent[2:] == [("d/dev/c", lost["id"])]
    clock.now += 60
    commands.on_state("dev", "status", ONLINE)
    commands._resend_due(clock.now + SETTLE_S)
    assert len(broker.sent) == 3  # once


def test_a_device_back_before_the_crash_was_seen_gets_only_what_it_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device online again before the hub saw its node down: commands published between
    the crash and its online are sent again, those published after it are not."""
    commands, broker, clock = _make(monkeypatch)
    clock.now += 0.2
    missed = commands.create("dev", {"op": "ping"}, "t", 60, online=True)
    clock.now += 0.3
    commands.on_state("dev", "status", ONLINE)
    clock.now += 0.2
    commands.create("dev", {"op": "read"}, "t", 60, online=True)  # to the new session
    commands.connections_lost(["dev"], since=999.0)
    commands._resend_due(clock.now + SETTLE_S)
    assert broker.sent[2:] == [("d/dev/c", missed["id"])]


def test_commands_created_in_doubt_and_a_reboot_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command created while its device's node is known down is checked once the device is
    back; a device that goes offline before SETTLE_S has passed (a reboot it was told to do)
    waits for its next online; commands published before the crash are not sent again."""
    commands, broker, clock = _make(monkeypatch)
    old = commands.create("dev", {"op": "ping"}, "t", 60, online=True)
    clock.now += 5
    commands.connections_lost(["dev"], since=clock.now - 1)
    held = commands.create("dev", {"op": "reboot"}, "t", 60, online=True)
    clock.now += 1
    commands.on_state("dev", "status", ONLINE)
    commands.on_state("dev", "status", OFFLINE)
    clock.now += SETTLE_S + 1
    commands._resend_due(clock.now)
    assert broker.sent == [("d/dev/c", old["id"]), ("d/dev/c", held["id"])]
    commands.on_state("dev", "status", ONLINE)
    _reply(commands, "dev", held["id"])
    clock.now += SETTLE_S + 1
    commands._resend_due(clock.now)
    assert len(broker.sent) == 2
    assert commands.get(old["id"])["status"] == "pending"  # type: ignore[index]

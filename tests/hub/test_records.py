"""The console's tables on both stores, without the hub: device state, commands, history,
alarm rules and alarms (with the CLI's acknowledgement), pruning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.history import Records
from hub.store import SqlHistory, open_store
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlHistory]:
    """Each backend in turn."""
    if request.param == "sqlite":
        backend = open_store(None, tmp_path)
    else:
        backend = open_store(fresh_database(request.getfixturevalue("postgres_url")), tmp_path)
    yield backend
    backend.close()


def command(cid: int, status: str = "pending", sent_at: float = 100.0) -> dict[str, object]:
    return {
        "id": cid,
        "device": "d1",
        "by": "ada",
        "op": "ping",
        "body": {"op": "ping"},
        "sent_at": sent_at,
        "status": status,
        "reply": None,
        "replied_at": None,
        "expires_at": sent_at + 60,
    }


def test_state_commands_and_history_round_trip(store: SqlHistory) -> None:
    """States are upserted and deleted, commands keep their newest version, and a device's
    history lists its commands and events newest first."""
    store.save_records(
        Records(
            states={"d1": {"status": "online", "last_seen": 5.0}, "d2": {"status": "asleep"}},
            commands={1: command(1), 2: command(2, sent_at=200.0)},
            events=[
                ("d1", 10.0, "connected", '{"network": "tcp"}'),
                ("d1", 20.0, "disconnected", '{"reason": "clean"}'),
            ],
        )
    )
    replied = {
        **command(1),
        "status": "replied",
        "reply": {"id": 1, "ok": True},
        "replied_at": 101.0,
    }
    store.save_records(
        Records(states={"d2": None, "d1": {"status": "offline"}}, commands={1: replied})
    )
    assert store.load_states() == {"d1": {"status": "offline"}}
    assert store.command(1) == replied and store.command(3) is None
    assert [c["id"] for c in store.pending_commands()] == [2]
    assert store.max_command_id() == 2
    history = store.device_history("d1", 10)
    assert [c["id"] for c in history["commands"]] == [2, 1]
    assert history["events"] == [
        {"time": 20.0, "event": "disconnected", "reason": "clean"},
        {"time": 10.0, "event": "connected", "network": "tcp"},
    ]
    assert store.device_history("d1", 1)["events"][0]["event"] == "disconnected"
    store.prune_records(150.0)  # finished commands and events before it; pending ones stay
    history = store.device_history("d1", 10)
    assert [c["id"] for c in history["commands"]] == [2] and history["events"] == []


def test_alarm_rules_and_acknowledgements(store: SqlHistory) -> None:
    """Rules are numbered from 1 and removed by id; an acknowledgement written beside the
    hub's record (the CLI's way) is read back and given once."""
    first = store.save_alarm_rule({"name": "a"})
    second = store.save_alarm_rule({"name": "b"})
    assert (first["id"], second["id"]) == (1, 2)
    assert store.remove_alarm_rule(1) and not store.remove_alarm_rule(1)
    assert [r["name"] for r in store.alarm_rules()] == ["b"]
    alarm = {
        "id": 7,
        "rule": 2,
        "device": "d1",
        "state": "active",
        "acknowledged_by": None,
        "acknowledged_at": None,
    }
    store.save_records(Records(alarms={7: alarm}))
    assert store.alarm_acks([7]) == []
    assert store.acknowledge_alarm(7, "ada", 50.0)
    assert not store.acknowledge_alarm(7, "bob", 60.0) and not store.acknowledge_alarm(8, "x", 1)
    assert store.alarm_acks([7, 8]) == [(7, "ada", 50.0)]
    store.save_records(Records(alarms={7: {**alarm, "state": "cleared"}}))  # the hub's update
    (kept,) = store.alarms()
    assert (kept["state"], kept["acknowledged_by"], kept["acknowledged_at"]) == (
        "cleared",
        "ada",
        50.0,
    )
    active = {**alarm, "id": 8}
    store.save_records(Records(alarms={7: {**kept, "cleared_at": 90.0}, 8: active}))
    store.prune_records(100.0)  # cleared alarms before it go; active ones stay
    assert [a["id"] for a in store.alarms()] == [8]

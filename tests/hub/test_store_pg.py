"""Two hubs writing one PostgreSQL database (cluster mode): every write takes its rows in one
order, so two writers on the same devices never deadlock."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import psycopg

from hub.history import Records
from hub.store import RowTuple, SqlHistory, open_store
from tests.support.postgres import fresh_database

DEVICES = [f"d{i:03d}" for i in range(60)]
ROUNDS = 120
PER_BATCH = 40  # devices in one writer's batch: two thirds of them, so batches overlap
KEYS = 3000  # readings (device, boot, seq) both writers draw from


def _command(cid: int, writer: int) -> dict[str, Any]:
    """A command record as hub/commands.py keeps it."""
    return {
        "id": cid,
        "device": DEVICES[cid % len(DEVICES)],
        "by": f"hub{writer}",
        "op": "ping",
        "body": {"op": "ping"},
        "sent_at": 100.0,
        "status": "pending",
        "reply": None,
        "replied_at": None,
        "expires_at": 160.0,
    }


def _hammer(store: SqlHistory, writer: int, start: threading.Barrier) -> tuple[int, set[Any]]:
    """One hub's writes: batches of device states (a few removed), commands and readings of
    randomly chosen devices in a random order. Returns the readings it inserted and offered."""
    rng = random.Random(writer)
    inserted = 0
    offered: set[Any] = set()
    start.wait()
    for n in range(ROUNDS):
        chosen = rng.sample(DEVICES, PER_BATCH)  # a random order, as a hub's batch has
        states: dict[str, dict[str, Any] | None] = {
            d: {"status": "online", "last_seen": float(n), "by": writer} for d in chosen
        }
        for d in chosen[:2]:
            states[d] = None  # removed devices
        ids = rng.sample(range(1, 200), 10)
        store.save_records(
            Records(
                states=states,
                commands={i: _command(i, writer) for i in ids},
                events=[(d, float(n), "connected", "{}") for d in chosen[:5]],
            )
        )
        keys = rng.sample(range(KEYS), 200)
        rows: list[RowTuple] = [
            (DEVICES[k % len(DEVICES)], "t", "b1", k, 1.5, float(n)) for k in keys
        ]
        offered.update((r[0], r[2], r[3]) for r in rows)
        inserted += store.add(rows)
    return inserted, offered


def test_two_writers_on_the_same_devices_never_deadlock(postgres_url: str, tmp_path: Path) -> None:
    """Two stores (two hubs) on one database write overlapping device states, removals,
    commands and readings in random orders at once: no deadlock nor any other error, every
    reading stored exactly once whichever writer inserted it."""
    url = fresh_database(postgres_url)
    stores = [open_store(url, tmp_path / f"hub{i}") for i in range(2)]
    start = threading.Barrier(2)
    results: list[tuple[int, set[Any]]] = []
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            results.append(_hammer(stores[writer], writer, start))
        except BaseException as exc:  # reported below with its type
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert not any(t.is_alive() for t in threads), "a writer hung"
        assert errors == [], [f"{type(e).__name__}: {e}" for e in errors]
        assert not any(isinstance(e, psycopg.errors.DeadlockDetected) for e in errors)
        offered = results[0][1] | results[1][1]
        assert results[0][0] + results[1][0] == len(offered)  # each stored once
        with psycopg.connect(url) as db:
            stored = db.execute("SELECT count(*) FROM readings").fetchone()
            writers = db.execute("SELECT DISTINCT state::json->>'by' FROM device_state").fetchall()
        assert stored is not None and stored[0] == len(offered)
        assert {w[0] for w in writers} <= {"0", "1"} and writers
    finally:
        for store in stores:
            store.close()

"""Readings published to the real hub land in its telemetry store exactly once."""

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hub import ingest as ingest_module
from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED
from hub.ingest import Ingest
from hub.store import SqliteStore, open_store
from tests.support.devices import running_device
from tests.support.durable import Events
from tests.support.hubproc import scaled, start_hub
from tests.support.mqtt import (
    PINGRESP,
    PUBACK,
    RawClient,
    packet_id,
    pingreq_packet,
    publish_packet,
)
from tests.support.postgres import fresh_database
from tests.support.waits import eventually, eventually_async


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_readings_are_stored_once_and_bad_ones_skipped(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """With either backend: a QoS 1 resend (DUP) of a reading is stored once; a malformed
    reading is not stored; the store is flushed when the hub stops."""
    url = None
    if backend == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres_url"))
    hub = start_hub(tmp_path / "data", *(["--store", url] if url else []))
    try:

        async def scenario() -> None:
            dev = await RawClient.tcp(hub.host, hub.mqtt_port)
            await dev.connect("ingest-1")
            for pid, payload, dup in [
                (1, b"ab,0,20.5", False),
                (2, b"ab,1,20.6", False),
                (2, b"ab,1,20.6", True),
                (3, b"ab,2,oops", False),
                (4, b"ab,2,20.7", False),
            ]:
                await dev.send(
                    publish_packet("d/ingest-1/t/temp", payload, qos=1, pid=pid, dup=dup)
                )
                await dev.expect(PUBACK)
            await dev.close()

        asyncio.run(scenario())
    finally:
        assert hub.stop() < scaled(5)
    stored = open_store(url, hub.data_dir).query("ingest-1")
    assert [(r.sensor, r.boot, r.seq, r.value) for r in stored] == [
        ("temp", "ab", 0, 20.5),
        ("temp", "ab", 1, 20.6),
        ("temp", "ab", 2, 20.7),
    ]


def test_firmware_readings_reach_storage(tmp_path: Path) -> None:
    """Readings from the real firmware are stored with consecutive sequence numbers."""
    hub = start_hub(tmp_path / "data")
    store = SqliteStore(hub.data_dir)
    try:
        with running_device(tmp_path, hub, "store-1", period_s=1):
            eventually(lambda: len(store.query("store-1")) >= 3, 15, "3 readings stored")
    finally:
        hub.stop()
    rows = store.query("store-1")
    boots = {r.boot for r in rows}
    assert len(boots) == 1
    seqs = [r.seq for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_locked_store_is_not_acknowledged_and_nothing_is_lost(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """While another process holds the store locked, readings get no PUBACK and a
    store_failure event goes out; after the lock goes, store_recovered follows, the reading
    that was in the failed commit is stored anyway and a resend is acknowledged."""
    url = None
    if backend == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres_url"))
    logs = (tmp_path / "hub.log").open("w")
    hub = start_hub(tmp_path / "data", *(["--store", url] if url else []), stderr=logs)
    try:

        async def scenario() -> None:
            events = await Events.watch(hub.host, hub.mqtt_port)
            dev = await RawClient.tcp(hub.host, hub.mqtt_port)
            await dev.connect("locked-1")
            topic = "d/locked-1/t/temp"
            await dev.send(publish_packet(topic, b"ab,0,20.0", qos=1, pid=1))
            await dev.expect(PUBACK)
            with _locked(hub.data_dir, url):
                await dev.send(publish_packet(topic, b"ab,1,20.1", qos=1, pid=2))
                await events.wait_for("store_failure", 10)
                await dev.send(publish_packet(topic, b"ab,2,20.2", qos=1, pid=3))
                await dev.send(pingreq_packet())  # answered at once: the hub is not stuck
                assert (await dev.recv(scaled(2))).kind == PINGRESP
                with pytest.raises(asyncio.TimeoutError):
                    await dev.expect(PUBACK, timeout=scaled(1))
            await events.wait_for("store_recovered", 15)
            store = open_store(url, hub.data_dir)
            try:
                assert [r.seq for r in store.query("locked-1")] == [0, 1]  # 1 was retried
                await dev.send(publish_packet(topic, b"ab,2,20.2", qos=1, pid=3, dup=True))
                assert packet_id(await dev.expect(PUBACK, timeout=scaled(5))) == 3
                assert [r.seq for r in store.query("locked-1")] == [0, 1, 2]
            finally:
                store.close()
            assert events.kinds().count("store_failure") == 1
            await dev.close()
            await events.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log
    assert log.count("telemetry store failing") == 1


@contextlib.contextmanager
def _locked(data_dir: Path, url: str | None) -> Iterator[None]:
    """Holds the telemetry table locked against writers from another connection."""
    if url is None:
        db = sqlite3.connect(data_dir / SqliteStore.FILE, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    with psycopg.connect(url) as pg:
        pg.execute("LOCK TABLE readings IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


def test_postgresql_going_away_is_survived(tmp_path: Path, postgres_url: str) -> None:
    """When the PostgreSQL server drops the hub's connection and refuses new ones, readings go
    unacknowledged (store_failure); once it takes connections again the hub reconnects by
    itself (store_recovered), stores what it held and acknowledges again."""
    url = fresh_database(postgres_url)
    name = url.rsplit("/", 1)[1]
    hub = start_hub(tmp_path / "data", "--store", url)
    try:

        async def scenario() -> None:
            events = await Events.watch(hub.host, hub.mqtt_port)
            dev = await RawClient.tcp(hub.host, hub.mqtt_port)
            await dev.connect("pg-gone-1")
            topic = "d/pg-gone-1/t/temp"
            await dev.send(publish_packet(topic, b"cd,0,1.0", qos=1, pid=1))
            await dev.expect(PUBACK)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                await dev.send(publish_packet(topic, b"cd,1,1.1", qos=1, pid=2))
                await events.wait_for("store_failure", 10)
                with pytest.raises(asyncio.TimeoutError):
                    await dev.expect(PUBACK, timeout=scaled(1))
                admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            await events.wait_for("store_recovered", 15)
            await dev.send(publish_packet(topic, b"cd,1,1.1", qos=1, pid=2, dup=True))
            assert packet_id(await dev.expect(PUBACK, timeout=scaled(5))) == 2
            await dev.close()
            await events.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
    store = open_store(url, tmp_path)
    try:
        assert [(r.seq, r.value) for r in store.query("pg-gone-1")] == [(0, 1.0), (1, 1.1)]
    finally:
        store.close()


def test_disk_low_is_reported_once_while_it_lasts(tmp_path: Path) -> None:
    """Below the threshold a disk_low event names the free space; a second check soon after
    does not repeat it; the free space is in the ingest stats."""
    events: list[tuple[str, dict[str, object]]] = []

    async def scenario() -> None:
        store = SqliteStore(tmp_path)
        ingest = Ingest(
            store,
            data_dir=tmp_path,
            report=lambda kind, event: events.append((kind, event)),
            disk_low="1000000GB",
        )
        await ingest.check_disk()
        await ingest.check_disk()
        store.close()
        assert ingest.stats.disk_free_bytes is not None and ingest.stats.disk_free_bytes > 0

    asyncio.run(scenario())
    assert [kind for kind, _ in events] == ["disk_low"]
    assert events[0][1]["client_id"] == "hub" and "MB free of" in str(events[0][1]["detail"])


def test_a_full_queue_refuses_readings_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past --store-queue readings waiting for a commit, new ones get the REFUSED handle (not
    acknowledged) and one warning says why; those taken are stored."""

    async def scenario() -> None:
        store = SqliteStore(tmp_path)
        ingest = Ingest(store, max_pending=2)
        ingest.start()
        handles = [ingest.on_message("d/q-1/t/temp", b"ab,%d,1.0" % n) for n in range(4)]
        assert handles[0] is handles[1] and handles[0] is not REFUSED
        assert handles[2] is REFUSED and handles[3] is REFUSED
        await ingest.stop()
        assert [r.seq for r in store.query("q-1")] == [0, 1]
        assert ingest.stats.refused == 2
        store.close()

    with caplog.at_level(logging.WARNING, logger="hub.ingest"):
        asyncio.run(scenario())
    assert sum("wait for a commit" in r.getMessage() for r in caplog.records) == 1


def _refusing_store(tmp_path: Path) -> SqliteStore:
    """A SQLite store whose trigger refuses readings above 1,000."""
    store = SqliteStore(tmp_path)
    db = sqlite3.connect(tmp_path / SqliteStore.FILE, isolation_level=None)
    db.execute(
        "CREATE TRIGGER no_huge BEFORE INSERT ON readings WHEN NEW.value > 1000 "
        "BEGIN SELECT RAISE(ABORT, 'value out of range'); END"
    )
    db.close()
    return store


@pytest.mark.parametrize("room", ["room", "full"])
def test_a_reading_the_store_rejects_is_kept_as_a_dead_letter_and_acknowledged(
    tmp_path: Path, room: str
) -> None:
    """With a data dir, a reading the store refuses is written to rejected-readings.jsonl and
    its batch counts as committed (every reading of it is kept somewhere), so its device moves
    on; a resend of it is acknowledged at once. When that file is full, the reading is dropped
    and its batch is not acknowledged, as without a data dir."""

    async def scenario() -> list[tuple[str, dict[str, object]]]:
        store = _refusing_store(tmp_path)
        dead = tmp_path / ingest_module.DEAD_LETTERS
        if room == "full":
            dead.write_bytes(b"x" * ingest_module.MAX_DEAD_LETTER_BYTES)
        events: list[tuple[str, dict[str, object]]] = []
        ingest = Ingest(
            store, data_dir=tmp_path, report=lambda kind, event: events.append((kind, event))
        )
        ingest.start()
        handles = [
            ingest.on_message("d/k-1/t/temp", p)
            for p in (b"ab,1,1.0", b"ab,2,5000.0", b"ab,3,3.0")
        ]
        batch = handles[0]
        assert batch is not None and all(h is batch for h in handles)
        await eventually_async(lambda: batch.state != PENDING, scaled(10), "the batch")
        assert [r.seq for r in store.query("k-1")] == [1, 3]
        again = ingest.on_message("d/k-1/t/temp", b"ab,2,5000.0")
        if room == "room":
            assert batch.state == COMMITTED
            assert again is None  # kept: acknowledged at once
            (line,) = dead.read_text().splitlines()
            kept = json.loads(line)
            assert (kept["device"], kept["boot"], kept["seq"], kept["value"]) == (
                "k-1",
                "ab",
                2,
                5000.0,
            )
            assert "value out of range" in kept["error"]
        else:
            assert batch.state == FAILED and again is REFUSED
            assert dead.stat().st_size == ingest_module.MAX_DEAD_LETTER_BYTES
        await ingest.stop()
        store.close()
        return events

    events = asyncio.run(scenario())
    assert [kind for kind, _ in events] == ["store_rejected"]
    assert events[0][1]["kept"] is (room == "room")


def test_a_reading_the_store_rejects_is_dropped_and_never_blocks_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a data dir for dead letters, a reading a constraint of the database refuses
    (here a trigger) is found in its batch and dropped with one store_rejected event: the
    other readings are stored, nothing of that batch is acknowledged, the rejected reading is
    refused when it comes again, and readings after it are stored and acknowledged as usual."""

    async def scenario() -> tuple[list[tuple[str, dict[str, object]]], SqliteStore]:
        store = _refusing_store(tmp_path)
        events: list[tuple[str, dict[str, object]]] = []
        ingest = Ingest(store, report=lambda kind, event: events.append((kind, event)))
        ingest.start()
        payloads = [b"ab,1,1.0", b"ab,2,2.0", b"ab,3,5000.0", b"ab,4,4.0", b"ab,5,5.0"]
        handles = [ingest.on_message("d/p-1/t/temp", p) for p in payloads]
        batch = handles[0]
        assert batch is not None and all(h is batch for h in handles)
        await eventually_async(lambda: batch.state != PENDING, scaled(10), "the batch")
        assert batch.state == FAILED  # the rejected reading's sender is not acknowledged
        assert [r.seq for r in store.query("p-1")] == [1, 2, 4, 5]
        assert ingest.stats.rejected == 1 and not ingest.log.failing
        assert ingest.on_message("d/p-1/t/temp", b"ab,3,5000.0") is REFUSED  # sent again
        again = [ingest.on_message("d/p-1/t/temp", p) for p in (b"ab,2,2.0", b"ab,6,6.0")]
        await eventually_async(
            lambda: again[0] is not None and again[0].state == COMMITTED,
            scaled(10),
            "the resend and a new reading",
        )
        assert [r.seq for r in store.query("p-1")] == [1, 2, 4, 5, 6]
        await ingest.stop()
        return events, store

    with caplog.at_level(logging.WARNING, logger="hub.ingest"):
        events, store = asyncio.run(scenario())
    store.close()
    assert [kind for kind, _ in events] == ["store_rejected"]
    assert events[0][1]["device"] == "p-1" and "value out of range" in str(events[0][1]["detail"])
    assert sum("rejected by the store" in r.getMessage() for r in caplog.records) == 1

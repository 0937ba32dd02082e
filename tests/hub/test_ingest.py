"""Readings published to the real hub land in its telemetry store exactly once."""

import asyncio
from pathlib import Path

import pytest

from hub.store import SqliteStore, open_store
from tests.support.devices import running_device
from tests.support.hubproc import scaled, start_hub
from tests.support.mqtt import PUBACK, RawClient, publish_packet
from tests.support.postgres import fresh_database


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
                (1, b"ab,0,20.5", False), (2, b"ab,1,20.6", False), (2, b"ab,1,20.6", True),
                (3, b"ab,2,oops", False), (4, b"ab,2,20.7", False),
            ]:  # fmt: skip
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
        ("temp", "ab", 0, 20.5), ("temp", "ab", 1, 20.6), ("temp", "ab", 2, 20.7)]  # fmt: skip


def test_firmware_readings_reach_storage(tmp_path: Path) -> None:
    """Readings from the real firmware are stored with consecutive sequence numbers."""
    hub = start_hub(tmp_path / "data")
    store = SqliteStore(hub.data_dir)
    try:
        with running_device(tmp_path, hub, "store-1", period_s=1):
            deadline = asyncio.run(_wait_for_rows(store, "store-1", 3))
        assert deadline, "fewer than 3 readings stored in time"
    finally:
        hub.stop()
    rows = store.query("store-1")
    boots = {r.boot for r in rows}
    assert len(boots) == 1
    seqs = [r.seq for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def _wait_for_rows(store: SqliteStore, device: str, count: int) -> bool:
    for _ in range(int(scaled(15) / 0.2)):
        if len(store.query(device)) >= count:
            return True
        await asyncio.sleep(0.2)
    return False

"""Durable broker state: what the broker acknowledged survives SIGKILL and a clean stop."""

import asyncio
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.durable import Events
from tests.support.hubproc import HubProcess, start_hub
from tests.support.mqtt import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RawClient,
    ack_packet,
    decode_publish,
    packet_id,
)
from tests.support.mqtt import publish_packet as publish_bytes
from tests.support.networks import QUIET, WAIT, Network
from tests.support.postgres import fresh_database
from tests.support.waits import eventually_async

QOS1 = 40  # QoS 1 messages queued for the offline subscriber
QOS2 = 10  # QoS 2 messages queued for it
RETAINED = 5


class Hub:
    """One hub on a data dir that outlives it: restarted on the same dir."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.process: HubProcess = start_hub(data_dir, *extra)

    @property
    def tcp(self) -> Network:
        return Network(self.process, "tcp")

    def restart(self, sig: int) -> None:
        self.process.stop(sig)
        self.process = start_hub(self.data_dir, *self.extra)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub of the test's own on a data dir of its own."""
    running = Hub(tmp_path / "data")
    yield running
    running.process.stop()


async def _collect(sub: RawClient, want: set[bytes], timeout: float) -> dict[bytes, int]:
    """Receives until every payload in ``want`` arrived (QoS 1 acknowledged, QoS 2 completed);
    returns how often each payload arrived, then what a short quiet spell still brings."""
    seen: dict[bytes, int] = {}

    async def one(wait: float) -> None:
        msg = await sub.next_message(wait, ack=True)
        seen[msg.payload] = seen.get(msg.payload, 0) + 1
        if msg.qos == 2:
            await sub.complete_qos2(msg.pid or 0, WAIT)

    while not want <= seen.keys():
        await one(timeout)
    try:
        while True:
            await one(QUIET)
    except TimeoutError:
        pass
    return seen


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
def test_acknowledged_messages_and_retained_survive(hub: Hub, tag: str, sig: int) -> None:
    """QoS 1/2 messages acknowledged for an offline persistent subscriber and retained
    messages survive a SIGKILL (and a clean stop): QoS 1 at least once, QoS 2 exactly once,
    retained ones for new subscribers, and the subscription itself."""

    async def before() -> None:
        sub = await hub.tcp.client(f"{tag}-sub", clean=False)
        assert await sub.subscribe([(f"{tag}/q/#", 2)]) == [2]
        await sub.disconnect()
        pub = await hub.tcp.client(f"{tag}-pub")
        for i in range(QOS1):
            await pub.publish(f"{tag}/q/1", b"one-%d" % i, qos=1, pid=i + 1, timeout=WAIT)
        for i in range(QOS2):
            await pub.publish(f"{tag}/q/2", b"two-%d" % i, qos=2, pid=i + 1, timeout=WAIT)
        for i in range(RETAINED):
            await pub.publish(f"{tag}/r/{i}", b"kept-%d" % i, qos=1, retain=True, timeout=WAIT)
        await pub.close()  # no DISCONNECT: the hub goes next

    async def after() -> None:
        sub = await hub.tcp.open()
        assert await sub.connect(f"{tag}-sub", clean=False) == (True, 0)
        want = {b"one-%d" % i for i in range(QOS1)} | {b"two-%d" % i for i in range(QOS2)}
        seen = await _collect(sub, want, WAIT)
        assert want <= seen.keys()
        assert {p: n for p, n in seen.items() if p.startswith(b"two-") and n != 1} == {}
        viewer = await hub.tcp.client(f"{tag}-viewer")
        assert await viewer.subscribe([(f"{tag}/r/#", 1)]) == [1]
        retained = [await viewer.next_message(WAIT) for _ in range(RETAINED)]
        assert sorted(m.payload for m in retained) == [b"kept-%d" % i for i in range(RETAINED)]
        assert all(m.retain for m in retained)
        # The subscription survived: a new message reaches the subscriber without SUBSCRIBE.
        pub = await hub.tcp.client(f"{tag}-pub2")
        await pub.publish(f"{tag}/q/new", b"after the restart", qos=1, timeout=WAIT)
        assert (await sub.next_message(WAIT)).payload == b"after the restart"
        for client in (pub, viewer, sub):
            await client.disconnect()

    asyncio.run(before())
    hub.restart(sig)
    asyncio.run(after())


def test_qos2_in_flight_keeps_its_packet_id_and_its_release(hub: Hub, tag: str) -> None:
    """Across SIGKILL a QoS 2 message sent but not received again goes out with its packet id
    (the client drops it as a duplicate), and one whose PUBREC was answered gets PUBREL."""

    async def before() -> tuple[int, int]:
        sub = await hub.tcp.client(f"{tag}-sub", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 2)]) == [2]
        pub = await hub.tcp.client(f"{tag}-pub")
        await pub.publish(f"{tag}/q", b"released", qos=2, pid=1, timeout=WAIT)
        await pub.publish(f"{tag}/q", b"unanswered", qos=2, pid=2, timeout=WAIT)
        first = await sub.next_message(WAIT, ack=False)
        second = await sub.next_message(WAIT, ack=False)
        assert (first.payload, second.payload) == (b"released", b"unanswered")
        await sub.send(ack_packet(PUBREC, first.pid or 0))
        await sub.expect_reply(PUBREL, first.pid, WAIT)  # sent once the release is stored
        await pub.close()
        await sub.close()
        return first.pid or 0, second.pid or 0

    async def after(released: int, unanswered: int) -> None:
        sub = await hub.tcp.open()
        assert await sub.connect(f"{tag}-sub", clean=False) == (True, 0)
        got = [await sub.recv(WAIT) for _ in range(2)]
        ids = sorted(
            (p.kind, decode_publish(p).pid if p.kind == PUBLISH else packet_id(p)) for p in got
        )
        assert ids == sorted([(PUBREL, released), (PUBLISH, unanswered)])
        await sub.send(ack_packet(PUBCOMP, released))
        await sub.complete_qos2(unanswered, WAIT)
        await sub.recv_nothing(QUIET)
        await sub.disconnect()

    ids = asyncio.run(before())
    hub.restart(signal.SIGKILL)
    asyncio.run(after(*ids))


def test_incoming_qos2_receipt_survives_a_crash(hub: Hub, tag: str) -> None:
    """A QoS 2 message whose PUBREC the publisher got is not forwarded twice when the
    publisher resends it (DUP) to the restarted hub: the receipt was stored with it."""

    async def before() -> None:
        sub = await hub.tcp.client(f"{tag}-sub", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        await sub.disconnect()
        pub = await hub.tcp.client(f"{tag}-pub", clean=False)
        await pub.send(publish_bytes(f"{tag}/q", b"once", qos=2, pid=9))
        await pub.expect_reply(PUBREC, 9, WAIT)
        await pub.close()  # PUBREL never sent

    async def after() -> None:
        pub = await hub.tcp.open()
        assert await pub.connect(f"{tag}-pub", clean=False) == (True, 0)
        await pub.send(publish_bytes(f"{tag}/q", b"once", qos=2, pid=9, dup=True))
        await pub.expect_reply(PUBREC, 9, WAIT)
        await pub.send(ack_packet(PUBREL, 9))
        await pub.expect_reply(PUBCOMP, 9, WAIT)
        sub = await hub.tcp.open()
        assert await sub.connect(f"{tag}-sub", clean=False) == (True, 0)
        assert (await sub.next_message(WAIT)).payload == b"once"
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(before())
    hub.restart(signal.SIGKILL)
    asyncio.run(after())


def _rows(data_dir: Path, sql: str) -> int:
    db = sqlite3.connect(f"file:{data_dir / 'broker.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


def test_offline_sessions_and_retained_messages_expire(tmp_path: Path, tag: str) -> None:
    """With --session-expiry and --retained-expiry, an offline persistent session and a
    retained message go (from the store too, so a restart does not bring them back); a
    session that is online does not."""
    hub = Hub(tmp_path / "data", "--session-expiry", "1", "--retained-expiry", "1")
    try:

        async def before() -> RawClient:
            away = await hub.tcp.client(f"{tag}-away", clean=False)
            assert await away.subscribe([(f"{tag}/q", 1)]) == [1]
            await away.disconnect()
            online = await hub.tcp.client(f"{tag}-online", clean=False, keepalive=0)
            assert await online.subscribe([(f"{tag}/q", 1)]) == [1]
            pub = await hub.tcp.client(f"{tag}-pub")
            await pub.publish(f"{tag}/r", b"old news", qos=1, retain=True, timeout=WAIT)
            await pub.disconnect()
            return online

        async def scenario() -> None:
            online = await before()
            data_dir = hub.data_dir
            count = "SELECT COUNT(*) FROM broker_{} WHERE {} = '{}'"

            def expired() -> bool:
                assert _rows(data_dir, count.format("sessions", "client_id", f"{tag}-away")) == 0
                assert _rows(data_dir, count.format("retained", "topic", f"{tag}/r")) == 0
                return True

            await eventually_async(expired, WAIT * 2, "the session and the retained message go")
            assert _rows(data_dir, count.format("sessions", "client_id", f"{tag}-online")) == 1
            viewer = await hub.tcp.client(f"{tag}-viewer")
            assert await viewer.subscribe([(f"{tag}/r", 1)]) == [1]
            await viewer.recv_nothing(QUIET)
            away = await hub.tcp.open()
            assert await away.connect(f"{tag}-away", clean=False) == (False, 0)
            await online.ping(WAIT)  # still connected, its session intact
            for client in (viewer, away, online):
                await client.disconnect()

        asyncio.run(scenario())
    finally:
        hub.process.stop()


def test_a_clean_session_and_qos0_write_nothing(hub: Hub, tag: str) -> None:
    """QoS 0 traffic between clean sessions leaves the broker's store as it was."""

    async def scenario() -> None:
        sub = await hub.tcp.client(f"{tag}-sub")
        assert await sub.subscribe([(f"{tag}/q", 0)]) == [0]
        pub = await hub.tcp.client(f"{tag}-pub")
        for i in range(20):
            await pub.send(publish_bytes(f"{tag}/q", b"%d" % i))
        assert [(await sub.next_message(WAIT)).payload for _ in range(20)] == [
            b"%d" % i for i in range(20)
        ]
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())
    tables = ("retained", "sessions", "subscriptions", "deliveries", "receipts")
    counts = {t: _rows(hub.data_dir, f"SELECT COUNT(*) FROM broker_{t}") for t in tables}
    assert counts == dict.fromkeys(tables, 0)


def test_state_in_postgresql_survives_a_crash(tmp_path: Path, tag: str, postgres_url: str) -> None:
    """A hub whose store is PostgreSQL keeps the broker's state there: queued messages, the
    subscription and retained messages survive SIGKILL."""
    url = fresh_database(postgres_url)
    hub = Hub(tmp_path / "data", "--store", url)
    try:

        async def before() -> None:
            sub = await hub.tcp.client(f"{tag}-sub", clean=False)
            assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
            await sub.disconnect()
            pub = await hub.tcp.client(f"{tag}-pub")
            for i in range(10):
                await pub.publish(f"{tag}/q", b"pg-%d" % i, qos=1, pid=i + 1, timeout=WAIT)
            await pub.publish(f"{tag}/r", b"kept", qos=1, retain=True, timeout=WAIT)
            await pub.close()

        async def after() -> None:
            sub = await hub.tcp.open()
            assert await sub.connect(f"{tag}-sub", clean=False) == (True, 0)
            seen = await _collect(sub, {b"pg-%d" % i for i in range(10)}, WAIT)
            assert set(seen) == {b"pg-%d" % i for i in range(10)}
            viewer = await hub.tcp.client(f"{tag}-viewer")
            assert await viewer.subscribe([(f"{tag}/r", 1)]) == [1]
            assert (await viewer.next_message(WAIT)).payload == b"kept"
            await viewer.disconnect()
            await sub.disconnect()

        asyncio.run(before())
        assert not (hub.data_dir / "broker.sqlite3").exists()
        hub.restart(signal.SIGKILL)
        asyncio.run(after())
    finally:
        hub.process.stop()


def test_a_failing_broker_store_withholds_acks_and_says_so(hub: Hub, tag: str) -> None:
    """While the broker's store cannot be written (its table dropped from outside), a retained
    publish is not acknowledged and a store_failure hub event names the broker's store; once
    the table is back, store_recovered follows and publishes are acknowledged again."""

    async def scenario() -> None:
        events = await Events.watch(hub.process.host, hub.process.mqtt_port)
        pub = await hub.tcp.client(f"{tag}-pub")
        await pub.publish(f"{tag}/r", b"before", qos=1, retain=True, timeout=WAIT)
        db = sqlite3.connect(hub.data_dir / "broker.sqlite3")
        db.execute("ALTER TABLE broker_retained RENAME TO broker_retained_away")
        db.commit()
        await pub.send(publish_bytes(f"{tag}/r", b"during", qos=1, retain=True, pid=2))
        failure = await events.wait_for("store_failure", WAIT)
        assert failure["store"] == "broker"
        with pytest.raises(TimeoutError):
            await pub.expect_reply(PUBACK, 2, QUIET)
        db.execute("ALTER TABLE broker_retained_away RENAME TO broker_retained")
        db.commit()
        db.close()
        await events.wait_for("store_recovered", WAIT * 2)
        await pub.publish(f"{tag}/r", b"after", qos=1, retain=True, pid=3, timeout=WAIT)
        await pub.disconnect()
        await events.close()

    asyncio.run(scenario())
    stored = sqlite3.connect(f"file:{hub.data_dir / 'broker.sqlite3'}?mode=ro", uri=True)
    try:
        rows = stored.execute("SELECT payload FROM broker_retained").fetchall()
    finally:
        stored.close()
    assert rows == [(b"after",)]

"""The broker's durable state on the event loop: every change is a record appended to a
group-commit log (hub/commitlog.py) that one thread writes to the state store
(hub/broker/statestore.py), and whatever must wait for it (a PUBACK, a PUBREC, a PUBREL, a
QoS 2 delivery) waits on the returned batch.

What is written (only what changes durable state; a QoS 0 message to a clean session writes
nothing): retained sets and clears, persistent sessions created, resumed, gone offline and
dropped, their subscriptions, each QoS 1/2 delivery to a persistent session until it is
acknowledged, and the QoS 2 receipts of persistent sessions. Acknowledged deliveries are
forgotten lazily: their deletion rides in the next batch and nothing waits for it.

Expiry (``expire``) asks the store, off the loop, which offline sessions and retained messages
are older than their settings and drops those that did not change meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hub.broker.session import Message
from hub.broker.statestore import BrokerState, Record, SqlBrokerState
from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED, Batch, CommitLog

log = logging.getLogger(__name__)

MAX_PENDING_ROWS = 200_000
MAX_PENDING_BYTES = 128 * 1024 * 1024
RECORD_OVERHEAD = 100  # bytes a pending record costs beyond its strings and payload


class _Joined:
    """Finishes its batch once both batches have committed; fails it as soon as one fails."""

    __slots__ = ("batch", "left")

    def __init__(self, a: Batch, b: Batch) -> None:
        self.batch = Batch(-2)
        self.left = 2
        a.wait(self)
        b.wait(self)

    def batch_done(self, batch: Batch) -> None:
        if self.batch.state != PENDING:
            return
        if batch.state == FAILED:
            self.batch.finish(FAILED)
            return
        self.left -= 1
        if not self.left:
            self.batch.finish(COMMITTED)


def joined(a: Batch | None, b: Batch | None) -> Batch | None:
    """One handle for two (a reading's and the broker state's): committed when both are."""
    if a is None or a is b:
        return b
    if b is None:
        return a
    if a.state == FAILED or b.state == FAILED:
        return REFUSED
    if a.state == COMMITTED:
        return b
    if b.state == COMMITTED:
        return a
    return _Joined(a, b).batch


class Journal:
    """Appends the broker's state changes; each method returns the batch that holds it (or
    ``REFUSED`` while the store fails or too much is pending)."""

    def __init__(
        self,
        store: SqlBrokerState,
        *,
        on_failure: Callable[[BaseException, bool], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        max_rows: int = MAX_PENDING_ROWS,
    ) -> None:
        self.store = store
        self.log: CommitLog[Record] = CommitLog(
            store.write,
            max_rows=max_rows,
            max_bytes=MAX_PENDING_BYTES,
            on_failure=on_failure,
            on_recovered=on_recovered,
            name="broker-state",
        )
        # Changed since the running expiry's query began: not expired by it.
        self._touched_sessions: set[str] | None = None
        self._touched_topics: set[str] | None = None

    async def load(self) -> BrokerState:
        """What the store holds (before the broker accepts connections)."""
        started = time.monotonic()
        state = await asyncio.to_thread(self.store.load, time.time())
        log.info(
            "broker state loaded in %.2f s: %d retained, %d sessions, %d deliveries",
            time.monotonic() - started,
            len(state.retained),
            len(state.sessions),
            state.deliveries,
        )
        return state

    def start(self) -> None:
        self.log.start()

    async def stop(self) -> None:
        """Writes what is pending, then closes the store."""
        await self.log.stop()
        await asyncio.to_thread(self.store.close)

    def _append(self, record: Record, size: int) -> Batch:
        return self.log.append(record, size + RECORD_OVERHEAD)

    # --- retained messages ------------------------------------------------------------------
    def retain(self, message: Message, owner: str | None) -> Batch:
        if self._touched_topics is not None:
            self._touched_topics.add(message.topic)
        if not message.payload:
            return self._append(("unretain", message.topic), len(message.topic_bytes))
        record = ("retain", message.topic, message.payload, message.qos, owner, time.time())
        return self._append(record, len(message.payload) + len(message.topic_bytes))

    # --- sessions ---------------------------------------------------------------------------
    def _touch(self, client_id: str) -> None:
        if self._touched_sessions is not None:
            self._touched_sessions.add(client_id)

    def session(self, client_id: str, owner: str) -> Batch:
        """A persistent session connected: created, or resumed (online: it never expires)."""
        self._touch(client_id)
        return self._append(("session", client_id, owner), len(client_id) + len(owner))

    def offline(self, client_id: str) -> Batch:
        self._touch(client_id)
        return self._append(("offline", client_id, time.time()), len(client_id))

    def drop(self, client_id: str) -> Batch:
        self._touch(client_id)
        return self._append(("drop", client_id), len(client_id))

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> Batch:
        return self._append(("sub", client_id, topic_filter, qos), len(topic_filter))

    def unsubscribe(self, client_id: str, topic_filter: str) -> Batch:
        return self._append(("unsub", client_id, topic_filter), len(topic_filter))

    # --- deliveries to persistent sessions and their acknowledgements ------------------------
    def queue(self, client_id: str, seq: int, message: Message, qos: int, retain: bool) -> Batch:
        record = ("queue", client_id, seq, message.topic, message.payload, qos, int(retain))
        return self._append(record, len(message.payload) + len(message.topic_bytes))

    def release(self, client_id: str, seq: int) -> Batch:
        return self._append(("release", client_id, seq), len(client_id))

    def done(self, client_id: str, seq: int) -> Batch:
        return self._append(("done", client_id, seq), len(client_id))

    # --- QoS 2 receipts of persistent sessions ----------------------------------------------
    def receipt(self, client_id: str, pid: int) -> Batch:
        return self._append(("receipt", client_id, pid), len(client_id))

    def unreceipt(self, client_id: str, pid: int) -> Batch:
        return self._append(("unreceipt", client_id, pid), len(client_id))

    # --- expiry -----------------------------------------------------------------------------
    async def expired(
        self, session_expiry: float, retained_expiry: float
    ) -> tuple[list[str], list[str]]:
        """Sessions offline for longer than ``session_expiry`` seconds and retained messages
        older than ``retained_expiry`` (0: never), as the store has them, less those that
        changed while it was asked."""
        if not session_expiry and not retained_expiry:
            return [], []
        now = time.time()
        self._touched_sessions, self._touched_topics = set(), set()
        try:
            cids, topics = await asyncio.to_thread(
                self.store.expired,
                now - session_expiry if session_expiry else None,
                now - retained_expiry if retained_expiry else None,
            )
            touched_sessions, touched_topics = self._touched_sessions, self._touched_topics
        finally:
            self._touched_sessions = self._touched_topics = None
        return (
            [c for c in cids if c not in touched_sessions],
            [t for t, _ in topics if t not in touched_topics],
        )


class _After:
    __slots__ = ("call",)

    def __init__(self, call: Callable[[Batch], None]) -> None:
        self.call = call

    def batch_done(self, batch: Batch) -> None:
        self.call(batch)


def after(batch: Batch, call: Callable[[Batch], None]) -> None:
    """``call(batch)`` once the batch has committed or failed (at once if it has)."""
    batch.wait(_After(call))

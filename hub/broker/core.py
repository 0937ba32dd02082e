"""The hub's broker core: sessions, subscriptions, retained messages, wills and keepalive.

amqtt 0.12.1 supplies the broker's lifecycle and the plugin framework users extend it with
(hub/broker/extensions.py); the hub's own logins (hub/broker/login.py) and topic rules are
called directly. amqtt's session and delivery engine is replaced here because it breaks MQTT
3.1.1 in ways an IoT hub cannot live with; each rule below names the amqtt behaviour it
replaces and is covered by tests/mqtt/:

1. Keepalive: amqtt's read-timeout handler is a no-op (Yakifo/amqtt#308). Here connections
   silent for 1.5 x keepalive are closed and their wills published; a timer wheel
   (hub/broker/deadlines.py) looks only at those whose deadline came due.
2. Redelivery: amqtt drops unacknowledged QoS 1/2 messages on disconnect (#401/#402). Here they
   stay in the session and are resent with DUP on reconnect.
3. Persistent sessions: amqtt throws away sessions of clients its auth marked anonymous and lets
   a CleanSession=0 connect inherit a clean session. Here a persistent session is resumed only
   if it was persistent, and Session Present says so.
4. Retained leak: on CONNECT amqtt pushes retained messages matching every client's filters.
   Here retained messages go only to the subscribing client's new subscription.
5. QoS: amqtt delivers at the subscription's QoS. Here min(publish QoS, subscription QoS).
6. Retain flag: amqtt sets RETAIN on messages queued for offline sessions. Here only retained
   messages sent for a new subscription carry it.
7. Zombies: after a publish to a wildcard or empty topic amqtt stops routing but keeps the
   connection. Here the connection is closed and the will published. A publish to a '$' topic
   is acknowledged and dropped (a filter_violation event), as any publish outside the rules.
8. Invalid input: see hub/broker/codec.py; the connection is closed at once.
9. QoS 1 timeout: amqtt gives up on a PUBACK after 5 s and loses the message (#391). Here
   messages stay in flight until acknowledged.
10. Health probes: amqtt logs an ERROR with a traceback for a connect+close. Here: debug.
11. Queues: bounded per session, see hub/broker/session.py.
12. Take-over: amqtt (and the MQTT 3.1.1 rule [MQTT-3.1.2-8]) closes the older connection
    without DISCONNECT, so its will is published.
13. Durability: amqtt keeps everything in memory. Here, with a journal (hub/broker/journal.py),
    retained messages, persistent sessions, their subscriptions, QoS 1/2 deliveries and QoS 2
    receipts are written in group commits, and what a publish changed is durable before it is
    acknowledged. A QoS 2 message is stored, then PUBREC goes out, then it is forwarded
    (method B of the specification's figure 4.3, with the stored packet id and deliveries): a
    QoS 2 delivery to a persistent session never leaves before its record is durable, so a
    restart resends it with the same packet id. Offline sessions and retained messages expire
    (``session_expiry``, ``retained_expiry``).

Every per-client resource has a bound (README, "Broker behaviour and limits"): retained
messages and bytes per client and for the hub (hub/broker/retained.py), filters per SUBSCRIBE
and per session, bytes queued per session, the publish rate of an identity across reconnects,
PINGREQs. Retained messages for a new subscription go out in slices that yield to the event
loop and wait while the subscriber's buffers are full. Repeated warnings about one client go
out (log and hub event) once per kind per 10 s with a count (hub/broker/throttle.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from hub.broker import codec
from hub.broker.connection import Connection
from hub.broker.deadlines import DeadlineWheel
from hub.broker.extensions import PUBLISH, SUBSCRIBE, Action, Extensions
from hub.broker.journal import Journal, after, joined
from hub.broker.login import THROTTLED, Login
from hub.broker.reporting import EventReporting, EventSink
from hub.broker.retained import RetainedStore
from hub.broker.session import Limits, Message, Queued, Session
from hub.broker.settings import BrokerSettings, PublishCheck, Refusal
from hub.broker.statestore import BrokerState
from hub.broker.throttle import Buckets
from hub.broker.topictree import TopicTree
from hub.broker.traffic import Traffic
from hub.broker.transports import Link
from hub.commitlog import COMMITTED, FAILED, PENDING, Batch
from hub.security import Identity, Verdict
from hub.topicmatch import check_topic_filter

log = logging.getLogger(__name__)
__all__ = ["BrokerCore", "BrokerSettings", "EventSink", "PublishCheck", "Refusal"]

ACL_CACHE = 64  # topics a connection's publish verdicts are remembered for
ACL_CACHED_TOPIC_MAX = 128  # longer topics are checked every time (the cache stays small)
_SENT, _QUEUED, _OVERFLOW = Queued.SENT, Queued.QUEUED, Queued.OVERFLOW
_KEPT = (_SENT, _QUEUED)
RETAINED_SLICE = 100  # retained messages sent for a new subscription before yielding
RETAINED_WAIT_S = 0.01  # how often a paused retained delivery looks at the buffers again
EXPIRY_SWEEP_MAX_S = 60.0  # how often expiry runs: a quarter of the shorter expiry, at most this
EXPIRY_SWEEP_MIN_S = 0.5

# One QoS 2 delivery planned before its records commit: (session, QoS, sequence number or 0).
Planned = tuple[Session, int, int]


def _worse(state: Batch | None, handle: Batch) -> Batch:
    """Of two journal handles of one pass (the same open batch, or REFUSED), the one to wait on."""
    return handle if state is None or handle.state == FAILED else state


# Load shedding: while the event loop runs this far behind, a new CONNECT is answered at once
# with CONNACK 3 (server unavailable) instead of being checked and admitted. A connection
# waits in the kernel's accept queue (1,024, hub/server.py) for about four passes of the loop
# (256 accepts a pass), and a device gives up on a CONNECT after its I/O timeout (5 s): past a
# second a pass, the queue holds connections whose devices will have left by the time their
# CONNECT is read, and admitting them is work thrown away (the congestion collapse measured in
# BENCHMARKS.md, session 4). A refusal costs the hub a read and a write, and the device backs
# off with jitter (firmware/node/session.py; tests/firmware/test_storm.py).
SHED_LAG_S = 1.0  # both of the last two lag samples at least this late
LAG_PROBE_S = 0.1  # how often the loop's lag is sampled
SHED_LOG_EVERY_S = 10.0


def _without_password(c: codec.Connect, identity: Identity | None = None) -> codec.Connect:
    """The CONNECT as kept for the connection's life (built directly: dataclasses.replace
    cost 7 % of a CONNECT in a profile). A client id or user name that is the identity's name
    is kept as that one text (a device's id and user name are the same), not as a copy per
    field of the packet: one text fewer per connected device."""
    client_id, username = c.client_id, c.username
    if identity is not None:
        name = identity.name
        if client_id == name:
            client_id = name
        if username == name:
            username = name
    return codec.Connect(
        client_id,
        c.clean_session,
        c.keepalive,
        username,
        None,
        c.will_topic,
        c.will_payload,
        c.will_qos,
        c.will_retain,
        c.protocol_ok,
    )


def _reason_code(close_reason: str, will: bool) -> str:
    """The short reason of a disconnection, as hub events name it."""
    for prefix, code in (
        ("disconnect", "clean"),
        ("keepalive", "keepalive_timeout"),
        ("disabled", "disabled"),
        ("kicked", "kicked"),
        ("taken over", "taken_over"),
        ("hub shutting down", "shutdown"),
    ):
        if close_reason.startswith(prefix):
            return code
    return "will" if will else "lost"


class BrokerCore(EventReporting):
    def __init__(self, settings: BrokerSettings, login: Login, extensions: Extensions) -> None:
        self.settings = settings
        self.max_payload = settings.max_payload
        # The largest packet we accept: a maximal topic and packet id around the payload.
        self.max_packet = settings.max_payload + 2 + 65535 + 2
        self.connect_timeout = settings.connect_timeout
        self.max_connect = settings.max_connect
        self.limits = Limits(
            max_inflight=settings.max_inflight,
            max_queued=settings.max_queued,
            high_water=settings.max_buffered,
            max_queued_bytes=settings.max_queued_bytes,
            disconnect_slow=settings.slow_consumer == "disconnect",
        )
        self.login = login  # the hub's gatekeeper
        self.extensions = extensions  # the users' amqtt plugins
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, Connection] = {}
        self.traffic = Traffic()
        self.tree = TopicTree()
        self.retained = RetainedStore(
            settings.max_retained_per_client,
            settings.max_retained_bytes_per_client,
            settings.max_retained_bytes,
        )
        self.publish_check: PublishCheck | None = None
        self.buckets = Buckets(settings.rate_limit)  # publish rates, kept across reconnects
        self._owned: dict[str, dict[str, None]] = {}  # identity -> its persistent sessions
        self.message_listeners: list[Callable[[str, bytes], Batch | None]] = []
        self.init_reporting()
        self._feeds: set[asyncio.Task[None]] = set()  # retained deliveries under way
        self._all: set[Connection] = set()
        # Keepalive deadlines of logged-in connections, looked at only when due.
        self._deadlines: DeadlineWheel[Connection] = DeadlineWheel(
            settings.keepalive_sweep, self._deadline_of
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self.journal: Journal | None = None  # durable state (set before start), else memory
        self._expiry: asyncio.Task[None] | None = None
        self.loop_lag = 0.0  # s the lag probe ran late, twice running: how far behind
        self._last_late = 0.0
        self.shed = 0  # CONNECTs answered with CONNACK 3 while the loop was behind
        self._shed_logged = (0.0, 0)  # (when, self.shed then)
        self._lag_probe: asyncio.TimerHandle | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep_keepalive())
        self._probe_lag(loop.time())
        if self.journal is not None:
            self.journal.start()
            self._expiry = loop.create_task(self._sweep_expired(self.journal))

    async def stop(self) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        for conn in list(self._all):
            conn.kill("hub shutting down", will=False)

    async def close_journal(self) -> None:
        """Writes what the journal holds and closes its store (after ``stop``)."""
        if self.journal is not None:
            await self.journal.stop()

    def restore(self, state: BrokerState) -> None:
        """The durable state a restart found, before the broker accepts connections."""
        journal = self.journal
        for r in state.retained:
            self.retained.restore(Message(r.topic, r.payload, r.qos, True), r.owner)
        for stored in state.sessions.values():
            session = Session(stored.client_id, False, self.limits)
            session.owner = stored.owner
            session.journal = journal
            session.subscriptions.update(stored.subscriptions)
            for topic_filter, qos in stored.subscriptions.items():
                self.tree.add(topic_filter, stored.client_id, qos)
            if stored.receipts:
                session.receipts = set(stored.receipts)
            session.restore(stored.deliveries)
            self.sessions[stored.client_id] = session
            if stored.owner:
                self._owned.setdefault(stored.owner, {})[stored.client_id] = None

    async def _sweep_expired(self, journal: Journal) -> None:
        """Drops offline persistent sessions and retained messages past their expiry."""
        settings = self.settings
        spans = [s for s in (settings.session_expiry, settings.retained_expiry) if s]
        if not spans:
            return
        every = min(EXPIRY_SWEEP_MAX_S, max(EXPIRY_SWEEP_MIN_S, min(spans) / 4))
        while True:
            await asyncio.sleep(every)
            try:
                cids, topics = await journal.expired(
                    settings.session_expiry, settings.retained_expiry
                )
            except Exception as exc:
                log.warning("could not look for expired sessions and retained messages: %s", exc)
                continue
            for cid in cids:
                session = self.sessions.get(cid)
                if session is None or session.clean:
                    journal.drop(cid)  # a leftover
                elif cid not in self.connections:
                    log.info(
                        "persistent session %s expired (offline for more than %.0f s)",
                        cid,
                        settings.session_expiry,
                    )
                    self._drop_session(session)
            for topic in topics:
                clear = Message(topic, b"", 0, True)
                self.retained.store(clear, None)
                journal.retain(clear, None)
            if topics:
                log.info("%d retained messages expired", len(topics))

    def accept(self, link: Link) -> Connection | None:
        """A new network connection; None (refuse it) while the broker stops."""
        if self._stopping:
            return None
        conn = Connection(self, link)
        self._all.add(conn)
        return conn

    def _deadline_of(self, conn: Connection) -> float | None:
        """When a connection's keepalive runs out (1.5 x its keepalive after the last byte it
        sent); None once it is closed or asked for no keepalive."""
        if conn not in self._all or conn.close_reason is not None:
            return None
        limit = conn.keepalive_limit
        return None if limit is None else conn.last_rx + limit

    def sweep_keepalive(self, now: float) -> int:
        """Closes the connections silent past their keepalive (their wills go out); only those
        whose deadline came due are looked at (hub/broker/deadlines.py). Returns how many."""
        closed = 0
        for conn in self._deadlines.due(now):
            log.info("%s silent for %.1f s: keepalive timeout", conn, now - conn.last_rx)
            conn.kill("keepalive timeout")
            closed += 1
        return closed

    async def _sweep_keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_sweep)
            self.sweep_keepalive(time.monotonic())

    def kick(self, should_go: Callable[[Connection], str | None]) -> int:
        """Disconnects every client for which should_go returns a reason; returns how many."""
        kicked = 0
        for conn in list(self.connections.values()):
            reason = should_go(conn)
            if reason:
                log.info("%s kicked: %s", conn, reason)
                conn.kill(reason)
                kicked += 1
        return kicked

    # --- load shedding -----------------------------------------------------------------------
    def _probe_lag(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = max(0.0, now - due)
        # The smaller of the last two samples: one long pass (an import, a collection) is no
        # overload; a storm keeps every pass long.
        self.loop_lag, self._last_late = min(late, self._last_late), late
        if not self._stopping:
            self._lag_probe = loop.call_at(now + LAG_PROBE_S, self._probe_lag, now + LAG_PROBE_S)

    def shed_reason(self) -> str | None:
        """Why a new CONNECT is refused with CONNACK 3 now (the loop is SHED_LAG_S behind), or
        None to go on; counted, and logged at most every SHED_LOG_EVERY_S with the count."""
        lag = self.loop_lag
        if lag < SHED_LAG_S:
            return None
        self.shed += 1
        now = time.monotonic()
        since, count = self._shed_logged
        if now - since >= SHED_LOG_EVERY_S:
            self._shed_logged = (now, self.shed)
            log.warning(
                "overloaded (event loop %.1f s behind): new CONNECTs answered with CONNACK 3, "
                "%d since the last report",
                lag,
                self.shed - count,
            )
        return f"server busy: event loop {lag:.1f} s behind"

    # --- connect and disconnect ---------------------------------------------------------------
    def new_client_id(self) -> str:
        return f"auto-{uuid.uuid4().hex[:16]}"

    def authenticate_now(self, conn: Connection) -> bool | None:
        """``authenticate`` without waiting, as nearly every CONNECT is decided (a token, a
        keyed device secret, a refusal the users' plugins have no say in); None when it must
        wait (a legacy scrypt hash, or the users' authentication plugins): then call
        ``authenticate``."""
        connect = conn.connect
        assert connect is not None
        login = self.login
        address = str(conn.link.peer[0])
        username = connect.username
        if login.throttled(address, username):
            verdict = THROTTLED
        else:
            tls = conn.link.ssl_object()
            peer_cert = tls.getpeercert(binary_form=True) if tls is not None else None
            decided = login.check_now(
                username, connect.password, conn.client_id, tls is not None, peer_cert or None
            )
            if decided is None:
                return None
            if (
                decided.identity is None
                and decided.event == "auth_failure"
                and self.extensions.auth
                and not login.is_device(conn.client_id)
            ):
                return None  # the users' plugins may admit it: they answer asynchronously
            login.record(address, username, decided)
            verdict = decided
        # No secret outlives the check; the id and user name as one text.
        conn.connect = kept = _without_password(connect, verdict.identity)
        if conn.client_id == kept.client_id:
            conn.client_id, conn.username = kept.client_id, kept.username
        conn.verdict = verdict
        conn.identity = verdict.identity
        return verdict.identity is not None

    async def authenticate(self, conn: Connection) -> bool:
        """The hub's gatekeeper decides; a client it refuses for its credentials is offered
        to the users' authentication plugins (hub/broker/extensions.py)."""
        connect = conn.connect
        assert connect is not None
        login = self.login
        address = str(conn.link.peer[0])
        username, password = connect.username, connect.password
        conn.connect = _without_password(connect)  # no secret outlives the check
        if login.throttled(address, username):
            verdict = THROTTLED
        else:
            tls = conn.link.ssl_object()
            # The client certificate, if one was presented: the handshake verified it already.
            peer_cert = tls.getpeercert(binary_form=True) if tls is not None else None
            verdict = await login.check(
                username, password, conn.client_id, tls is not None, peer_cert or None
            )
            if (
                verdict.identity is None
                and verdict.event == "auth_failure"
                and self.extensions.auth
                and not login.is_device(conn.client_id)
            ):
                session = await self.extensions.authenticate(
                    conn.client_id, username, password, conn.link.peer, tls
                )
                if session is not None:
                    conn.plugin_session = session
                    name = username if username is not None else conn.client_id
                    verdict = Verdict(Identity("plugin", name))
            login.record(address, username, verdict)
        conn.verdict = verdict
        conn.identity = verdict.identity
        return verdict.identity is not None

    async def may(self, conn: Connection, topic: str, action: Action) -> bool:
        """The users' topic plugins' verdict, for a client their authentication plugins
        admitted (``may_now`` answers None for those)."""
        allowed = self.may_now(conn, topic, action)
        if allowed is not None:
            return allowed
        session = conn.plugin_session
        assert session is not None
        return await self.extensions.allows(session, topic, action)

    def may_now(self, conn: Connection, topic: str, action: Action) -> bool | None:
        """The hub's topic rules, synchronously; None for a client the users' plugins
        admitted (their topic plugins answer, asynchronously: ``may``)."""
        identity = conn.identity
        if identity is None:
            return False
        if conn.plugin_session is not None:
            return None
        if action is PUBLISH:
            return identity.may_publish(topic)
        return identity.may_subscribe(topic)

    def may_publish_now(self, conn: Connection, topic: str) -> bool | None:
        """``may_now`` for a publish, cached per connection (its identity never changes
        while it is connected): allowed short topics only, so the cache stays small and a
        client cannot fill it with refusals."""
        acl = conn.acl
        if acl is None:
            acl = conn.acl = {}
        elif topic in acl:
            return True
        allowed = self.may_now(conn, topic, PUBLISH)
        if allowed and len(topic) <= ACL_CACHED_TOPIC_MAX:
            if len(acl) >= ACL_CACHE:
                acl.clear()
            acl[topic] = True
        return allowed

    def may_subscribe_now(
        self, conn: Connection, filters: list[tuple[str, int]]
    ) -> list[bool] | None:
        """Each filter's verdict (False for an invalid filter), or None to ask ``may``."""
        verdicts = []
        cap = self.settings.max_filters_per_subscribe
        for topic_filter, _ in filters[:cap]:
            allowed = check_topic_filter(topic_filter) and self.may_now(
                conn, topic_filter, SUBSCRIBE
            )
            if allowed is None:
                return None
            verdicts.append(allowed)
        verdicts.extend([False] * (len(filters) - cap))  # over the quota (``subscribe``)
        return verdicts

    def take_session(self, conn: Connection) -> tuple[Session, bool]:
        """Resolves take-over and session resumption; returns (session, session present)."""
        connect = conn.connect
        assert connect is not None
        cid = conn.client_id
        old = self.connections.get(cid)
        if old is not None:
            log.info("%s takes over from %s", conn, old)
            old.taken_over = True
            # The older connection closes without DISCONNECT: its will goes out [MQTT-3.1.2-8].
            will = bool(old.publish_will and old.connect and old.connect.will_topic)
            if will:
                assert old.connect is not None
                self._publish_will(old, old.connect)
            old.kill("taken over by a new connection", will=False)
            if old.session is not None and old.session.link is old:
                old.session.detach()
            log.info("%s disconnected: taken over", old)
            self.report(
                "disconnected",
                old,
                "taken over by a new connection",
                reason="taken_over",
                will=will,
            )
        self.connections[cid] = conn
        existing = self.sessions.get(cid)
        journal = self.journal
        if existing is not None and not connect.clean_session and not existing.clean:
            existing.detach()
            self._own(conn, existing)
            if journal is not None:
                journal.session(cid, existing.owner)  # online: it does not expire
            return existing, True
        if existing is not None:
            self._drop_session(existing)
        session = Session(cid, connect.clean_session, self.limits)
        self.sessions[cid] = session
        if not connect.clean_session:
            self._own(conn, session)
            if journal is not None:
                session.journal = journal
                journal.session(cid, session.owner)
        return session, False

    def _own(self, conn: Connection, session: Session) -> None:
        """Charges a persistent session to the connection's identity; beyond
        max_sessions_per_identity its oldest offline ones are dropped (with their queues)."""
        if session.owner != conn.key:
            self._disown(session)
        session.owner = conn.key
        owned = self._owned.setdefault(conn.key, {})
        owned.pop(session.client_id, None)
        owned[session.client_id] = None  # the newest last
        limit = self.settings.max_sessions_per_identity
        if len(owned) <= limit:
            return
        for cid in list(owned):
            old = self.sessions.get(cid)
            if cid in self.connections and old is not None:
                continue  # in use: only offline sessions are dropped
            if old is not None:
                self._drop_session(old)
                detail = f"sessions: more than {limit} persistent sessions: {cid}'s dropped"
                self.warn("quota_exceeded", conn, detail, quota="sessions")
            owned.pop(cid, None)
            if len(owned) <= limit:
                return

    def _disown(self, session: Session) -> None:
        owned = self._owned.get(session.owner)
        if owned is not None:
            owned.pop(session.client_id, None)
            if not owned:
                del self._owned[session.owner]

    def _drop_session(self, session: Session) -> None:
        if session.owner:
            self._disown(session)
        for topic_filter in session.subscriptions:
            self.tree.remove(topic_filter, session.client_id)
        session.subscriptions.clear()
        if session.journal is not None:
            session.journal.drop(session.client_id)  # its deliveries and receipts too
            session.journal = None
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def connection_started(self, conn: Connection) -> None:
        self._deadlines.add(conn)  # its keepalive, if it asked for one
        log.info(
            "%s connected (keepalive %s)", conn, conn.connect.keepalive if conn.connect else 0
        )
        self.report("connected", conn)

    def connection_lost(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._deadlines.discard(conn)
        if conn.session is None:
            return  # it never got past CONNECT
        reason = conn.close_reason or "connection lost"
        if conn.taken_over or self.connections.get(conn.client_id) is not conn:
            return  # a newer connection owns the client id and its session now
        del self.connections[conn.client_id]
        connect = conn.connect
        will = conn.publish_will and connect is not None and connect.will_topic is not None
        if will:
            assert connect is not None
            self._publish_will(conn, connect)
        session = conn.session
        if session is not None:
            if session.link is conn:
                session.detach()
            if session.clean:
                self._drop_session(session)
            elif session.journal is not None:
                session.journal.offline(session.client_id)  # its expiry counts from now
        log.info("%s disconnected: %s", conn, reason)
        self.report("disconnected", conn, reason, reason=_reason_code(reason, will), will=will)

    def _publish_will(self, conn: Connection, connect: codec.Connect) -> None:
        topic = connect.will_topic
        assert topic is not None
        if topic.startswith("$"):
            return
        allowed = self.may_now(conn, topic, PUBLISH)
        if allowed is None:
            asyncio.get_running_loop().create_task(self._publish_will_after_check(conn, connect))
        else:
            self._publish_will_if(allowed, conn, connect)

    async def _publish_will_after_check(self, conn: Connection, connect: codec.Connect) -> None:
        assert connect.will_topic is not None
        allowed = await self.may(conn, connect.will_topic, PUBLISH)
        self._publish_will_if(allowed, conn, connect)

    def _publish_will_if(self, allowed: bool, conn: Connection, connect: codec.Connect) -> None:
        assert connect.will_topic is not None
        if not allowed:
            self.report("filter_violation", conn, f"will on {connect.will_topic}")
            return
        log.debug("%s: publishing its will on %s", conn, connect.will_topic)
        will = Message(
            connect.will_topic, connect.will_payload, connect.will_qos, connect.will_retain
        )
        self.publish_from(conn, will)

    # --- routing ---------------------------------------------------------------------------
    def publish_from(
        self,
        conn: Connection,
        message: Message,
        received: Callable[[Batch | None], Batch | None] | None = None,
    ) -> Batch | None:
        """A client's message (or will), allowed by the topic rules: the hub's publish check
        and the retained quotas first, then routed. Returns the commit handle of what it
        changed (a reading a listener stores, the broker's durable state; the client is
        acknowledged once that has committed), else None. For QoS 2, ``received(handle)``
        acknowledges it (PUBREC once committed) and returns the handle subscribers wait on."""
        self.traffic.received[message.qos] += 1
        check = self.publish_check
        if check is not None:
            refusal = check(conn.identity, message.topic, message.payload, message.retain)
            if refusal is not None:
                extra: dict[str, Any] = {"topic": message.topic[:200]}
                if refusal.device is not None:
                    extra["device"] = refusal.device
                if refusal.quota is not None:
                    extra["quota"] = refusal.quota
                self.warn(refusal.event, conn, refusal.detail, **extra)
                if received is not None:
                    received(None)
                return None
        state = None
        if message.retain:
            owner = conn.key or conn.client_id
            quota = self.retained.store(message, owner)
            if quota is not None:
                self.warn(
                    "quota_exceeded",
                    conn,
                    f"{quota}: message on {message.topic[:200]} routed but not retained",
                    quota=quota,
                )
            elif self.journal is not None:
                state = self.journal.retain(message, owner)
        return self._route(message, received, state)

    def publish(self, message: Message, sender: Connection | None = None) -> None:
        """The hub's own message (events, commands): routed, retained without quotas."""
        state = None
        if message.retain:
            self.retained.store(message, None)
            if self.journal is not None:
                state = self.journal.retain(message, None)
        self._route(message, None, state)

    def _route(
        self,
        message: Message,
        received: Callable[[Batch | None], Batch | None] | None = None,
        state: Batch | None = None,
    ) -> Batch | None:
        """Hands the message to the listeners and its subscribers; returns what its sender's
        acknowledgement waits on. ``state``: the journal's handle of what it changed so far."""
        topic = message.topic
        payload = message.payload
        handle = None
        for listener in self.message_listeners:
            stored = listener(topic, payload)
            if stored is not None:
                handle = stored
        qos = message.qos
        sessions = self.sessions
        if qos == 2 and (received is not None or self.journal is not None):
            return self._route_qos2(message, received, handle, state)
        deliver = self._deliver
        for cid, sub_qos in self.tree.match(topic).items():
            session = sessions.get(cid)
            if session is None:
                continue
            sub_qos = sub_qos if sub_qos < qos else qos
            journal = session.journal
            if not sub_qos or journal is None:
                deliver(session, message, sub_qos, False)
                continue
            seq = session.next_seq()
            if deliver(session, message, sub_qos, False, seq) in _KEPT:
                state = _worse(state, journal.queue(cid, seq, message, sub_qos, False))
        if state is None:
            return handle
        return joined(handle, state)

    def _route_qos2(
        self,
        message: Message,
        received: Callable[[Batch | None], Batch | None] | None,
        handle: Batch | None,
        state: Batch | None,
    ) -> Batch | None:
        """A QoS 2 message: stored (its reading, its deliveries to persistent sessions, the
        receipt), then PUBREC, then forwarded to every subscriber."""
        plan: list[Planned] = []
        for cid, sub_qos in self.tree.match(message.topic).items():
            session = self.sessions.get(cid)
            if session is None:
                continue
            seq = 0
            if sub_qos and session.journal is not None:
                seq = session.next_seq()
                state = _worse(state, session.journal.queue(cid, seq, message, sub_qos, False))
            plan.append((session, sub_qos, seq))
        final = joined(handle, state)
        if received is not None:
            final = received(final)
        if final is None or final.state == COMMITTED:
            self._deliver_planned(message, plan, final)
        elif final.state == PENDING:
            after(final, partial(self._deliver_planned, message, plan))
        return final

    def _deliver_planned(self, message: Message, plan: list[Planned], batch: Batch | None) -> None:
        if batch is not None and batch.state == FAILED:
            return  # not acknowledged: its sender sends it again
        for session, qos, seq in plan:
            if self.sessions.get(session.client_id) is not session:
                continue  # dropped meanwhile, its records with it
            journal = session.journal
            if self._deliver(session, message, qos, False, seq) not in _KEPT and seq and journal:
                journal.done(session.client_id, seq)

    def _deliver(
        self, session: Session, message: Message, qos: int, retain: bool, seq: int = 0
    ) -> Queued:
        result = session.enqueue(message, qos, retain, seq)
        if result is _SENT:
            self.traffic.sent[qos] += 1
            return result
        if result is _QUEUED:
            self.traffic.sent[qos] += 1
            link = session.link
            if isinstance(link, Connection):
                link.on_backlog()
        elif result is _OVERFLOW:
            conn = self.connections.get(session.client_id)
            quota = session.full_because()
            limits = self.limits
            bound = (
                f"{limits.max_queued} messages"
                if quota == "queued_messages"
                else f"{limits.max_queued_bytes} bytes"
            )
            if conn is not None and session.link is conn:
                self.warn(
                    "queue_full",
                    conn,
                    f"{bound} queued: disconnected (slow consumer)",
                    quota=quota,
                    action="disconnected",
                )
                conn.kill(f"slow consumer: {bound} queued")
            else:
                detail = f"offline, {bound} queued: messages dropped"
                self._report_offline("queue_full", session, detail, quota=quota, action="dropped")
        return result

    def subscribe(
        self, conn: Connection, pid: int, filters: list[tuple[str, int]], verdicts: list[bool]
    ) -> None:
        """Grants the filters whose verdict (``may_subscribe_now``) allows them."""
        session = conn.session
        assert session is not None
        codes: list[int] = []
        granted: list[tuple[str, int]] = []
        settings = self.settings
        subscriptions = session.subscriptions
        cap = settings.max_filters_per_subscribe
        state: Batch | None = None
        if len(filters) > cap:
            detail = f"filters_per_subscribe: {len(filters)} filters, the first {cap} considered"
            self.warn("quota_exceeded", conn, detail, quota="filters_per_subscribe")
        for (topic_filter, qos), allowed in zip(filters[:cap], verdicts[:cap], strict=True):
            if (
                topic_filter not in subscriptions
                and len(subscriptions) >= settings.max_subscriptions
            ):
                detail = f"subscriptions: more than {settings.max_subscriptions}: refused"
                self.warn("quota_exceeded", conn, detail, quota="subscriptions")
                codes.append(codec.SUBACK_FAILURE)
                continue
            if not check_topic_filter(topic_filter):
                codes.append(codec.SUBACK_FAILURE)
                continue
            if not allowed:
                self.warn(
                    "filter_violation", conn, f"subscribe to {topic_filter[:200]}", logging.INFO
                )
                codes.append(codec.SUBACK_FAILURE)
                continue
            qos = min(qos, settings.max_qos)
            self.tree.add(topic_filter, session.client_id, qos)
            subscriptions[topic_filter] = qos
            codes.append(qos)
            granted.append((topic_filter, qos))
            if session.journal is not None:
                state = _worse(
                    state, session.journal.subscribe(session.client_id, topic_filter, qos)
                )
        codes.extend([codec.SUBACK_FAILURE] * (len(filters) - cap))
        if state is not None and state.state != COMMITTED:
            # A persistent session's SUBACK (and the retained messages after it) once its
            # subscriptions are durable; none if they cannot be stored (the client retries).
            after(state, partial(self._subscribed, conn, session, pid, codes, granted))
            return
        self._subscribed(conn, session, pid, codes, granted, None)

    def _subscribed(
        self,
        conn: Connection,
        session: Session,
        pid: int,
        codes: list[int],
        granted: list[tuple[str, int]],
        batch: Batch | None,
    ) -> None:
        if batch is not None and batch.state == FAILED:
            log.warning("%s: subscriptions not stored: SUBACK withheld", conn)
            return
        if conn.close_reason is not None or session.link is not conn:
            return
        conn.write(codec.suback(pid, codes))  # SUBACK before any retained message
        if not granted or not len(self.retained):
            return
        wild = []
        for topic_filter, qos in granted:
            if "+" in topic_filter or "#" in topic_filter:
                wild.append((topic_filter, qos))
                continue
            message = self.retained.get(topic_filter)
            if message is not None:
                self._deliver_retained(session, message, min(message.qos, qos))
        if wild:
            task = asyncio.get_running_loop().create_task(self._send_retained(conn, session, wild))
            self._feeds.add(task)
            task.add_done_callback(self._feeds.discard)

    async def _send_retained(
        self, conn: Connection, session: Session, granted: list[tuple[str, int]]
    ) -> None:
        """The retained messages for new subscriptions, in slices of RETAINED_SLICE that
        yield to the event loop; while the subscriber's write buffer is over its bound or its
        session queues messages, this waits (the queue never overflows because of it)."""
        high_water = self.limits.high_water
        sent = 0
        for topic_filter, qos in granted:
            for message in self.retained.matching(topic_filter):
                if session.subscriptions.get(topic_filter) != qos or conn.close_reason:
                    break  # unsubscribed or resubscribed meanwhile (that sends its own)
                if session.link is not conn:
                    return
                self._deliver_retained(session, message, min(message.qos, qos))
                sent += 1
                if sent % RETAINED_SLICE == 0:
                    await asyncio.sleep(0)
                while session.queue or conn.buffered() >= high_water:
                    if session.link is not conn or conn.close_reason:
                        return
                    await asyncio.sleep(RETAINED_WAIT_S)

    def _deliver_retained(self, session: Session, message: Message, qos: int) -> None:
        """A retained message for a new subscription, with RETAIN set; recorded for a
        persistent session like any QoS 1/2 delivery."""
        journal = session.journal
        if not qos or journal is None:
            self._deliver(session, message, qos, True)
            return
        seq = session.next_seq()
        if self._deliver(session, message, qos, True, seq) in _KEPT:
            journal.queue(session.client_id, seq, message, qos, True)

    def unsubscribe(self, conn: Connection, filters: list[str]) -> None:
        session = conn.session
        assert session is not None
        for topic_filter in filters:
            if session.subscriptions.pop(topic_filter, None) is not None:
                self.tree.remove(topic_filter, session.client_id)
                if session.journal is not None:
                    session.journal.unsubscribe(session.client_id, topic_filter)

"""One network connection: CONNECT, then each packet as its bytes arrive.

Packets are handled synchronously as the link delivers them, with no task per connection. The
few steps that must wait (checking the CONNECT's credentials, and a topic plugin that can only
answer asynchronously) run in a task; bytes that arrive meanwhile are kept (up to WAIT_BUFFER,
then the link stops reading) and handled in order once the step is done.

Before CONNECT a connection is cheap to refuse: its first byte must start a CONNECT, the packet
may be at most ``max_connect`` bytes (checked as soon as its length field arrives), and only
that packet is cut from what arrived; the rest waits unparsed until the login is done. A client
whose write buffer grows past ``max_buffered`` (it does not read its acknowledgements) is not
read from until the buffer drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from hub.broker import codec
from hub.broker.codec import ACK_PACK, ProtocolError, parse_pid, parse_publish
from hub.broker.extensions import PUBLISH, SUBSCRIBE
from hub.broker.journal import joined
from hub.broker.session import Message, Session
from hub.broker.throttle import RateLimit
from hub.broker.transports import Link
from hub.commitlog import COMMITTED, FAILED, PENDING, Batch
from hub.security import Identity, Verdict
from hub.topicmatch import check_topic_filter

if TYPE_CHECKING:
    from hub.broker.core import BrokerCore

log = logging.getLogger(__name__)
FLUSH_AT = 16 * 1024  # bytes of coalesced writes that go out without waiting for the loop
WAIT_BUFFER = 64 * 1024  # bytes kept while a step waits before the link stops reading
MAX_PENDING_ACKS = 4096  # acks held for a commit; past it a publish is not acknowledged
PACKETS_PER_PASS = 128  # packets handled before the event loop gets a turn (about 1 ms)
PINGS_PER_S = 100  # PINGRESPs a connection gets a second; more PINGREQs go unanswered
SERVER_UNAVAILABLE = 3  # CONNACK's return code when the hub sheds load (hub/broker/core.py)
_NO_LIMIT = RateLimit(0.0)
_PUBLISH_PACKET, _PUBACK_PACKET = codec.PUBLISH, codec.PUBACK  # module names: the hot path's


Step = Coroutine[Any, Any, None]


class Connection:
    """Acts on the packets its link delivers; the session's link while connected."""

    __slots__ = (
        "_ack_batch",
        "_acks",
        "_draining",
        "_ended",
        "_out",
        "_out_bytes",
        "_parser",
        "_pings",
        "_read_paused",
        "_timer",
        "_waiting",
        "acl",
        "client_id",
        "close_reason",
        "connect",
        "core",
        "identity",
        "keepalive_limit",
        "key",
        "last_rx",
        "link",
        "plugin_session",
        "publish_will",
        "rate",
        "session",
        "taken_over",
        "username",
        "verdict",
    )

    def __init__(self, core: BrokerCore, link: Link) -> None:
        self.core = core
        self.link = link
        self.client_id = ""
        self.username: str | None = None
        self.session: Session | None = None
        self.connect: codec.Connect | None = None
        self.keepalive_limit: float | None = None  # seconds of silence before we give up
        self.last_rx = time.monotonic()
        self.close_reason: str | None = None
        self.publish_will = True
        self.taken_over = False
        self.identity: Identity | None = None  # who the gatekeeper (or a plugin) says it is
        self.verdict: Verdict | None = None
        self.plugin_session: Any = None  # amqtt's session, for a client the users' plugins admit
        self.acl: dict[str, bool] | None = None  # topics it may publish to, once it publishes
        self.key = ""  # its identity ("device:ID", "token:NAME"): quotas and rates follow it
        self.rate = _NO_LIMIT  # its identity's bucket once it is logged in
        self._pings = (0.0, 0)  # (second, PINGREQs answered in it)
        self._parser = codec.Parser(core.max_connect)  # max_packet once logged in
        self._waiting: list[bytes] | None = None  # bytes that arrived while a step awaited
        self._ended = False
        self._draining = False  # waiting for the write buffer to drain (one callback)
        self._read_paused = False  # not read from until then
        self._out: list[bytes] | None = None  # packets waiting for the coalesced write
        self._out_bytes = 0
        self._acks: deque[tuple[Batch | None, int, int]] | None = None  # see _acknowledge
        self._ack_batch: Batch | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            core.connect_timeout, self._no_connect
        )

    def __repr__(self) -> str:
        host, port = self.link.peer
        return f"{self.client_id or '(connecting)'}@{host}:{port}/{self.link.network}"

    # --- Link (what the session writes through) --------------------------------------------
    def write(self, data: bytes) -> None:
        """Coalesced: everything written before the event loop runs again leaves in one
        link write (one send system call instead of one per packet), or every FLUSH_AT
        bytes of a burst."""
        out = self._out
        if out is None:
            self._out = [data]
            self._out_bytes = len(data)
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            out.append(data)
            self._out_bytes += len(data)
            if self._out_bytes >= FLUSH_AT:  # let the kernel take a burst as it builds up
                self.flush()

    def flush(self) -> None:
        out = self._out
        if out is not None:
            self._out = None
            self._out_bytes = 0
            data = out[0] if len(out) == 1 else b"".join(out)
            self.core.traffic.bytes_out += len(data)
            self.link.write(data)

    def buffered(self) -> int:
        return self._out_bytes + self.link.buffered()

    def on_backlog(self) -> None:
        """The session queued messages: once the write buffer drains, pump the queue."""
        if not self._draining and self.buffered() >= self.core.limits.high_water:
            self._wait_writable()

    def _wait_writable(self) -> None:
        self._draining = True
        self.flush()
        self.link.when_writable(self._writable)

    def _writable(self) -> None:
        self._draining = False
        if self._read_paused:
            self._read_paused = False
            if self._waiting is None and not self._ended:
                self.link.resume_reading()
        session = self.session
        if not self._ended and session is not None and session.link is self:
            self.flush()
            if not session.pump():
                self.on_backlog()

    def kill(self, reason: str, *, will: bool = True) -> None:
        """Closes the connection from our side; the will is published unless told otherwise.
        What was already written in this pass of the loop goes to the link first (a slow
        consumer cut off gets what it was sent before the cut)."""
        if self.close_reason is None:
            self.close_reason = reason
        self.publish_will = self.publish_will and will
        self.flush()
        self.link.abort()

    # --- what the link calls -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.core.traffic.bytes_in += len(data)
        waiting = self._waiting
        if waiting is not None:
            # Reading goes on while a step waits, so a client that leaves is noticed at once.
            waiting.append(data)
            if sum(len(d) for d in waiting) > WAIT_BUFFER:
                self.link.pause_reading()
            return
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
        else:
            if self.session is not None and self.buffered() > self.core.limits.high_water:
                self._pause_until_writable()

    def _feed(self, data: bytes) -> None:
        """Cuts and handles at most PACKETS_PER_PASS packets; the rest of what arrived stays
        in the parser's buffer and is cut on the next pass of the event loop."""
        if self.session is None:
            # Before login: one packet, a CONNECT; the rest stays unparsed (it may be garbage).
            if data and self.connect is None and not self._parser.pending and data[0] != 0x10:
                raise ProtocolError("the first packet must be CONNECT [MQTT-3.1.0-1]")
            first = self._parser.feed(data, 1)
            if first:
                self._handle_from(first, 0)
                # Admitted at once (no step): what came with the CONNECT is parsed now.
                if self.session is not None and self._waiting is None and self._parser.pending:
                    self._feed(b"")
            return
        packets = self._parser.feed(data, PACKETS_PER_PASS)
        if packets:
            self._handle_from(packets, 0)
            if (
                len(packets) == PACKETS_PER_PASS
                and self._waiting is None
                and self.close_reason is None
                and not self._ended
            ):
                self._waiting = []  # more may be buffered: the next pass takes it
                asyncio.get_running_loop().call_soon(self._resume, [])

    def _pause_until_writable(self) -> None:
        """Stops reading from a client that does not read what it is sent (its own acks):
        its write buffer stays bounded; reading resumes once the buffer has drained."""
        if self._waiting is not None or self._read_paused:
            return  # a waiting step governs reading, or it is paused already
        self._read_paused = True
        self.link.pause_reading()
        if not self._draining:
            self._wait_writable()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._stop_timer()
        if self.session is not None and self.close_reason is None:
            self.close_reason = "connection lost"
        self.core.connection_lost(self)

    def _no_connect(self) -> None:
        # Health probes and port scanners connect and close: not worth more than debug.
        self._timer = None
        log.debug("%s sent no CONNECT in time", self)
        self.link.abort()

    def _protocol_error(self, exc: ProtocolError) -> None:
        if self.session is None:
            self.close_reason = f"refused: {exc}"
        else:
            self.close_reason = f"protocol error: {exc}"
        kind = "payload_too_large" if isinstance(exc, codec.PayloadTooLarge) else "malformed"
        self.core.warn(kind, self, str(exc), logging.INFO)  # throttled per client (or address)
        self.link.abort()

    # --- packets, in order -------------------------------------------------------------------
    def _handle_from(self, packets: list[codec.Packet], index: int) -> None:
        """Handles packets in order until one needs to wait: it and the rest go to a task.
        After PACKETS_PER_PASS packets the rest wait for the next pass of the event loop, so
        one read full of small packets holds the loop for a few milliseconds, not more."""
        budget = index + PACKETS_PER_PASS
        while index < len(packets):
            if self.close_reason is not None or self._ended:
                return
            if index == budget:
                self._waiting = []
                asyncio.get_running_loop().call_soon(self._resume, packets[index:])
                return
            step = self._handle(packets[index])
            index += 1
            if step is not None:
                self._waiting = []
                rest = packets[index:]
                asyncio.get_running_loop().create_task(self._after(step, rest))
                return

    async def _after(self, step: Step, rest: list[codec.Packet]) -> None:
        """Finishes a step that waits, then what arrived in the meantime, in order."""
        try:
            await step
        except ProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            log.exception("%s: internal error", self)
            self.kill("internal error")
        self._resume(rest)

    def _resume(self, rest: list[codec.Packet]) -> None:
        """Handles what waited behind a step (or for the next pass of the loop), in order."""
        waiting, self._waiting = self._waiting or [], None
        if self.close_reason is not None or self._ended:
            return
        if self._parser.pending:
            waiting.insert(0, b"")  # what arrived with the CONNECT, unparsed till now
        try:
            self._handle_from(rest, 0)
            for index, data in enumerate(waiting):
                if self._waiting is not None:  # another step waits: keep the order
                    self._waiting.extend(waiting[index:])
                    break
                self._feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
        if self._waiting is None:
            if self.session is not None and self.buffered() > self.core.limits.high_water:
                self._pause_until_writable()
            elif not self._read_paused:
                self.link.resume_reading()

    def _handle(self, p: codec.Packet) -> Step | None:
        """Acts on one packet; returns a step to await when it cannot finish at once."""
        session = self.session
        if session is None:
            self._stop_timer()
            return self._accept(codec.parse_connect(p))
        kind = p.kind
        if kind == _PUBLISH_PACKET:
            pub = parse_publish(p, self.core.max_payload)
            acl = self.acl
            if acl is not None and pub.topic in acl and pub.qos != 2:
                self._publish(pub, True)  # a topic it was allowed before: the common case
                return None
            return self._on_publish(pub)
        if kind == _PUBACK_PACKET:
            session.on_puback(parse_pid(p))
        elif kind == codec.PUBREC:
            pid = codec.parse_pid(p)
            released = session.on_pubrec(pid)
            if released is not None:  # a durable delivery: PUBREL once its release is stored
                self._acknowledge(codec.PUBREL, pid, released)
        elif kind == codec.PUBREL:
            if p.flags != 0x02:
                raise ProtocolError("PUBREL flags must be 0010 [MQTT-3.6.1-1]")
            pid = codec.parse_pid(p)
            session.released_qos2(pid)
            self.write(codec.ack(codec.PUBCOMP, pid))
        elif kind == codec.PUBCOMP:
            session.on_pubcomp(codec.parse_pid(p))
        elif kind == codec.SUBSCRIBE:
            pid, filters = codec.parse_subscribe(p, self.core.settings.max_filters_per_subscribe)
            verdicts = self.core.may_subscribe_now(self, filters)
            if verdicts is None:
                return self._subscribe_after_check(pid, filters)
            self.core.subscribe(self, pid, filters, verdicts)
        elif kind == codec.UNSUBSCRIBE:
            pid, topic_filters = codec.parse_unsubscribe(p)
            self.core.unsubscribe(self, topic_filters)
            self.write(codec.ack(codec.UNSUBACK, pid))
        elif kind == codec.PINGREQ:
            self._ping()
        elif kind == codec.DISCONNECT:
            self.close_reason = "disconnect"
            self.publish_will = False  # [MQTT-3.14.4-3]
            self.flush()
            self.link.close()
        elif kind == codec.CONNECT:
            raise ProtocolError("second CONNECT on one connection [MQTT-3.1.0-2]")
        else:
            raise ProtocolError(f"packet type {kind} is not sent by clients")
        return None

    def _ping(self) -> None:
        second = int(self.last_rx)
        start, answered = self._pings
        if start != second:
            self._pings = (second, 1)
        elif answered < PINGS_PER_S:
            self._pings = (second, answered + 1)
        else:
            self.core.warn("rate_limit", self, f"over {PINGS_PER_S} PINGREQs/s: not answered")
            return
        self.write(codec.PINGRESP_PACKET)

    async def _subscribe_after_check(self, pid: int, filters: list[tuple[str, int]]) -> None:
        cap = self.core.settings.max_filters_per_subscribe
        verdicts = [
            index < cap and check_topic_filter(f) and await self.core.may(self, f, SUBSCRIBE)
            for index, (f, _) in enumerate(filters)
        ]
        self.core.subscribe(self, pid, filters, verdicts)

    # --- CONNECT -----------------------------------------------------------------------------
    def _accept(self, connect: codec.Connect) -> Step | None:
        """A CONNECT: decided at once when the login can be (nearly always: no task); a step
        to await when it must wait (a legacy scrypt hash, the users' plugins)."""
        self.connect = connect
        if not connect.protocol_ok:
            self._refuse(codec.REFUSED_PROTOCOL_VERSION, "protocol version")
            return None
        if not connect.client_id and not connect.clean_session:
            self._refuse(codec.REFUSED_IDENTIFIER, "empty client id [MQTT-3.1.3-8]")
            return None
        self.client_id = connect.client_id or self.core.new_client_id()
        self.username = connect.username
        shed = self.core.shed_reason()
        if shed is not None:  # counted and logged by the core: no event per client
            self.close_reason = f"refused: {shed}"
            self.link.write(codec.connack(False, SERVER_UNAVAILABLE))
            self.link.close()
            return None
        accepted = self.core.authenticate_now(self)
        if accepted is None:
            return self._accept_after_check()
        self._admit(accepted)
        return None

    async def _accept_after_check(self) -> None:
        accepted = await self.core.authenticate(self)
        if self._ended:
            return  # the client left while its credentials were checked
        self._admit(accepted)

    def _admit(self, accepted: bool) -> None:
        connect = self.connect
        assert connect is not None
        if not accepted:
            verdict = self.verdict
            bad_credentials = verdict is not None and verdict.bad_credentials
            code = (
                codec.REFUSED_BAD_CREDENTIALS if bad_credentials else codec.REFUSED_NOT_AUTHORIZED
            )
            why = (verdict.reason if verdict else "") or "not authorized"
            self._refuse(code, why, (verdict.event if verdict else "") or "auth_failure")
            return
        if connect.keepalive:
            self.keepalive_limit = connect.keepalive * 1.5  # [MQTT-3.1.2-24]
        identity = self.identity
        assert identity is not None
        kind, name = identity.kind, identity.name
        self.key = f"{kind}:{name}" if kind and name else f"client:{self.client_id}"
        self.rate = self.core.buckets.get(self.key)
        self._parser.max_packet = self.core.max_packet
        self.last_rx = time.monotonic()
        self.session, present = self.core.take_session(self)
        self.link.write(codec.connack(present, codec.ACCEPTED))
        self.session.attach(self)
        self.core.connection_started(self)

    def _refuse(self, code: int, why: str, event: str = "refused") -> None:
        self.close_reason = f"refused: {why}"
        # A login flood is one event (and log line) per client and reason per 10 s.
        self.core.warn(event, self, why, logging.INFO, variant=why)
        self.link.write(codec.connack(False, code))
        self.link.close()

    # --- PUBLISH -----------------------------------------------------------------------------
    def _on_publish(self, pub: codec.Publish) -> Step | None:
        """A PUBLISH (``_handle`` takes one on a topic in the connection's cache of allowed
        topics straight to ``_publish``: no '$' topic or QoS 2 is in it)."""
        session = self.session
        assert session is not None
        if pub.topic.startswith("$"):  # [MQTT-4.7.2-1]: acknowledged, never routed
            self._publish(pub, False)
            return None
        if pub.qos == 2 and session.has_qos2(pub.pid):
            self._acknowledge(codec.PUBREC, pub.pid, self._held(pub.pid))  # a resend
            return None
        allowed = self.core.may_publish_now(self, pub.topic)
        if allowed is None:
            return self._publish_after_check(pub)
        self._publish(pub, allowed)
        return None

    async def _publish_after_check(self, pub: codec.Publish) -> None:
        self._publish(pub, await self.core.may(self, pub.topic, PUBLISH))

    def _publish(self, pub: codec.Publish, allowed: bool) -> None:
        session = self.session
        assert session is not None
        if not self.rate.allow(self.last_rx):
            # QoS 0 is dropped; QoS 1/2 is not acknowledged, so the client keeps it and sends
            # it again later: the limit slows a device down without losing its readings.
            # Refused publishes count too: a flood of them is throttled the same way.
            self.core.warn("rate_limit", self, f"over {self.rate.rate} messages/s: refused")
            return
        if not allowed:
            self.core.warn(
                "filter_violation", self, f"publish to {pub.topic[:200]}: dropped", logging.INFO
            )
            if pub.qos == 1:
                self._acknowledge(_PUBACK_PACKET, pub.pid, None)
            elif pub.qos == 2:
                self._received_qos2(pub.pid, None)
            return
        message = Message(pub.topic, pub.payload, pub.qos, pub.retain)
        if pub.qos == 2:  # stored, then PUBREC, then on to subscribers (core.py, rule 13)
            self.core.publish_from(self, message, partial(self._received_qos2, pub.pid))
            return
        handle = self.core.publish_from(self, message)
        if pub.qos == 1:
            self._acknowledge(_PUBACK_PACKET, pub.pid, handle)

    def _received_qos2(self, pid: int, handle: Batch | None) -> Batch | None:
        """Remembers the packet id (durably for a persistent session: in the batch that holds
        the message's deliveries) and sends PUBREC once all of it is stored; returns that
        handle (subscribers get the message once it has committed)."""
        session = self.session
        if session is not None and (handle is None or handle.state != FAILED):
            handle = joined(handle, session.received_qos2(pid))
        self._acknowledge(codec.PUBREC, pid, handle)
        return handle

    # --- acknowledged means stored -------------------------------------------------------------
    # A message a listener stores (a reading) is acknowledged once its commit handle (a batch
    # of hub/commitlog.py) has committed; acks leave in the order the PUBLISHes came
    # [MQTT-4.6.0-2], so one without a handle behind a pending one waits its turn. A failed or
    # refused handle is never acknowledged: the client keeps the message and sends it again.
    def _acknowledge(self, kind: int, pid: int, handle: Batch | None) -> None:
        acks = self._acks
        if not acks:
            if handle is None or handle.state == COMMITTED:
                self.write(codec.ack(kind, pid))
                return
            if handle.state == FAILED:
                return
            if acks is None:
                acks = self._acks = deque()
        elif len(acks) >= MAX_PENDING_ACKS:
            if kind == codec.PUBREC and self.session is not None:
                self.session.released_qos2(pid)
            return  # not acknowledged: the client sends it again
        if handle is not None and handle is not self._ack_batch:
            self._ack_batch = handle
            handle.wait(self)
        acks.append((handle, kind, pid))

    def _held(self, pid: int) -> Batch | None:
        """The handle a PUBREC for this packet id waits on, if one does (a QoS 2 resend)."""
        for handle, kind, held in self._acks or ():
            if held == pid and kind == codec.PUBREC:
                return handle
        return None

    def batch_done(self, batch: Batch) -> None:
        """A batch this connection waits on has committed or failed: the acks it held go,
        in one write."""
        acks = self._acks
        if self._ended or not acks:
            return
        out = []
        popleft = acks.popleft
        while acks:
            handle, kind, pid = acks[0]
            if handle is not None:
                state = handle.state
                if state == PENDING:
                    break
                if state == FAILED:
                    popleft()
                    if kind == codec.PUBREC and self.session is not None:
                        self.session.released_qos2(pid)  # its resend is a new message
                    continue
            popleft()
            out.append(ACK_PACK(0x40, 2, pid) if kind == _PUBACK_PACKET else codec.ack(kind, pid))
        if out:
            self.write(b"".join(out))

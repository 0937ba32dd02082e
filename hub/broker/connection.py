"""One network connection: CONNECT, then each packet as its bytes arrive.

Packets are handled synchronously as the link delivers them, with no task per connection. The
few steps that must wait (checking the CONNECT's credentials, and a topic plugin that can only
answer asynchronously) run in a task; bytes that arrive meanwhile are kept (up to WAIT_BUFFER,
then the link stops reading) and handled in order once the step is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from amqtt.contexts import Action

from hub.broker import codec
from hub.broker.codec import ProtocolError
from hub.broker.session import Message, Session
from hub.broker.transports import Link
from hub.commitlog import COMMITTED, FAILED, PENDING, Batch

if TYPE_CHECKING:
    from hub.broker.core import BrokerCore

log = logging.getLogger(__name__)
FLUSH_AT = 16 * 1024  # bytes of coalesced writes that go out without waiting for the loop
WAIT_BUFFER = 64 * 1024  # bytes kept while a step waits before the link stops reading
MAX_PENDING_ACKS = 4096  # acks held for a commit; past it a publish is not acknowledged


class RateLimit:
    """A token bucket of ``rate`` messages a second with a burst of twice that; 0 is no limit."""

    __slots__ = ("_last", "_reported", "_tokens", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 2 * rate
        self._last = time.monotonic()
        self._reported = 0.0

    def allow(self, now: float) -> bool:
        if not self.rate:
            return True
        self._tokens = min(2 * self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def should_report(self) -> bool:
        """At most one report a second, however fast the client floods."""
        now = time.monotonic()
        if now - self._reported >= 1.0:
            self._reported = now
            return True
        return False


Step = Coroutine[Any, Any, None]


class Connection:
    """Acts on the packets its link delivers; the session's link while connected."""

    __slots__ = (
        "_ack_batch", "_acks", "_draining", "_ended", "_out", "_out_bytes", "_parser", "_timer",
        "_waiting", "acl",
        "client_id", "close_reason", "connect", "core", "keepalive_limit", "last_rx", "link",
        "plugin_session", "publish_will", "rate", "session", "taken_over", "username",
    )  # fmt: skip

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
        self.plugin_session: object = None
        self.acl: dict[str, bool] | None = None  # topic -> publish verdict, once it publishes
        self.rate = RateLimit(core.settings.rate_limit)
        self._parser = codec.Parser(core.max_packet)
        self._waiting: list[bytes] | None = None  # bytes that arrived while a step awaited
        self._ended = False
        self._draining = False
        self._out: list[bytes] | None = None  # packets waiting for the coalesced write
        self._out_bytes = 0
        self._acks: deque[tuple[Batch | None, int, int]] | None = None  # see _acknowledge
        self._ack_batch: Batch | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            core.connect_timeout, self._no_connect
        )

    @property
    def identity(self) -> object:
        """What the authentication plugin made of this client (hub.security.Identity)."""
        return getattr(self.plugin_session, "identity", None)

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
            self.link.write(out[0] if len(out) == 1 else b"".join(out))

    def buffered(self) -> int:
        return self._out_bytes + self.link.buffered()

    def on_backlog(self) -> None:
        """The session queued messages: once the write buffer drains, pump the queue."""
        if not self._draining and self.buffered() >= self.core.limits.high_water:
            self._draining = True
            self.flush()
            self.link.when_writable(self._writable)

    def _writable(self) -> None:
        self._draining = False
        session = self.session
        if not self._ended and session is not None and session.link is self:
            self.flush()
            if not session.pump():
                self.on_backlog()

    def kill(self, reason: str, *, will: bool = True) -> None:
        """Closes the connection from our side; the will is published unless told otherwise."""
        if self.close_reason is None:
            self.close_reason = reason
        self.publish_will = self.publish_will and will
        self.link.abort()

    # --- what the link calls -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
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

    def _feed(self, data: bytes) -> None:
        packets = self._parser.feed(data)
        if packets:
            self._handle_from(packets, 0)

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
            log.info("%s refused: %s", self, exc)
            self.close_reason = f"refused: {exc}"
        else:
            self.close_reason = f"protocol error: {exc}"
        kind = "payload_too_large" if isinstance(exc, codec.PayloadTooLarge) else "malformed"
        self.core.report(kind, self, str(exc))
        self.link.abort()

    # --- packets, in order -------------------------------------------------------------------
    def _handle_from(self, packets: list[codec.Packet], index: int) -> None:
        """Handles packets in order until one needs to wait: it and the rest go to a task."""
        while index < len(packets):
            if self.close_reason is not None or self._ended:
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
        waiting, self._waiting = self._waiting or [], None
        if self.close_reason is not None or self._ended:
            return
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
            self.link.resume_reading()

    def _handle(self, p: codec.Packet) -> Step | None:
        """Acts on one packet; returns a step to await when it cannot finish at once."""
        session = self.session
        if session is None:
            self._stop_timer()
            return self._accept(codec.parse_connect(p))
        kind = p.kind
        if kind == codec.PUBLISH:
            return self._on_publish(codec.parse_publish(p, self.core.max_payload))
        if kind == codec.PUBACK:
            session.on_puback(codec.parse_pid(p))
        elif kind == codec.PUBREC:
            session.on_pubrec(codec.parse_pid(p))
        elif kind == codec.PUBREL:
            if p.flags != 0x02:
                raise ProtocolError("PUBREL flags must be 0010 [MQTT-3.6.1-1]")
            pid = codec.parse_pid(p)
            session.released_qos2(pid)
            self.write(codec.ack(codec.PUBCOMP, pid))
        elif kind == codec.PUBCOMP:
            session.on_pubcomp(codec.parse_pid(p))
        elif kind == codec.SUBSCRIBE:
            pid, filters = codec.parse_subscribe(p)
            verdicts = self.core.may_subscribe_now(self, filters)
            if verdicts is None:
                return self._subscribe_after_check(pid, filters)
            self.core.subscribe(self, pid, filters, verdicts)
        elif kind == codec.UNSUBSCRIBE:
            pid, topic_filters = codec.parse_unsubscribe(p)
            self.core.unsubscribe(self, topic_filters)
            self.write(codec.ack(codec.UNSUBACK, pid))
        elif kind == codec.PINGREQ:
            self.write(codec.PINGRESP_PACKET)
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

    async def _subscribe_after_check(self, pid: int, filters: list[tuple[str, int]]) -> None:
        verdicts = [
            codec.check_topic_filter(f) and await self.core.may(self, f, Action.SUBSCRIBE)
            for f, _ in filters
        ]
        self.core.subscribe(self, pid, filters, verdicts)

    # --- CONNECT -----------------------------------------------------------------------------
    async def _accept(self, connect: codec.Connect) -> None:
        self.connect = connect
        if not connect.protocol_ok:
            self._refuse(codec.REFUSED_PROTOCOL_VERSION, "protocol version")
            return
        if not connect.client_id and not connect.clean_session:
            self._refuse(codec.REFUSED_IDENTIFIER, "empty client id [MQTT-3.1.3-8]")
            return
        self.client_id = connect.client_id or self.core.new_client_id()
        self.username = connect.username
        accepted = await self.core.authenticate(self)
        if self._ended:
            return  # the client left while its credentials were checked
        if not accepted:
            verdict = getattr(self.plugin_session, "verdict", None)
            bad_credentials = getattr(verdict, "bad_credentials", False)
            code = (
                codec.REFUSED_BAD_CREDENTIALS if bad_credentials else codec.REFUSED_NOT_AUTHORIZED
            )
            why = getattr(verdict, "reason", "") or "not authorized"
            self._refuse(code, why, getattr(verdict, "event", "") or "auth_failure")
            return
        if connect.keepalive:
            self.keepalive_limit = connect.keepalive * 1.5  # [MQTT-3.1.2-24]
        self.last_rx = time.monotonic()
        self.session, present = self.core.take_session(self)
        self.link.write(codec.connack(present, codec.ACCEPTED))
        self.session.attach(self)
        self.core.connection_started(self)

    def _refuse(self, code: int, why: str, event: str = "refused") -> None:
        log.info("%s refused: %s", self, why)
        self.close_reason = f"refused: {why}"
        self.core.report(event, self, why)
        self.link.write(codec.connack(False, code))
        self.link.close()

    # --- PUBLISH -----------------------------------------------------------------------------
    def _on_publish(self, pub: codec.Publish) -> Step | None:
        if pub.topic.startswith("$"):
            raise ProtocolError(f"clients may not publish to {pub.topic!r} [MQTT-4.7.2-1]")
        session = self.session
        assert session is not None
        if pub.qos == 2 and session.has_qos2(pub.pid):
            self._acknowledge(codec.PUBREC, pub.pid, self._held(pub.pid))  # a resend
            return None
        allowed = self.core.may_publish_now(self, pub.topic)
        if allowed is None:
            return self._publish_after_check(pub)
        self._publish(pub, allowed)
        return None

    async def _publish_after_check(self, pub: codec.Publish) -> None:
        self._publish(pub, await self.core.may(self, pub.topic, Action.PUBLISH))

    def _publish(self, pub: codec.Publish, allowed: bool) -> None:
        session = self.session
        assert session is not None
        handle: Batch | None = None
        if not allowed:
            log.info("%s may not publish to %s: message dropped", self, pub.topic)
            self.core.report("filter_violation", self, f"publish to {pub.topic}")
        elif not self.rate.allow(time.monotonic()):
            # QoS 0 is dropped; QoS 1/2 is not acknowledged, so the client keeps it and sends
            # it again later: the limit slows a device down without losing its readings.
            if self.rate.should_report():
                log.warning("%s exceeds %s messages/s: refused", self, self.rate.rate)
                self.core.report("rate_limit", self, f"over {self.rate.rate} messages/s")
            return
        else:
            handle = self.core.publish(Message(pub.topic, pub.payload, pub.qos, pub.retain), self)
        if pub.qos == 1:
            self._acknowledge(codec.PUBACK, pub.pid, handle)
        elif pub.qos == 2:
            if handle is None or handle.state != FAILED:
                session.received_qos2(pub.pid)
            self._acknowledge(codec.PUBREC, pub.pid, handle)

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
        """A batch this connection waits on has committed or failed: the acks it held go."""
        acks = self._acks
        if self._ended or not acks:
            return
        while acks:
            handle, kind, pid = acks[0]
            if handle is not None:
                if handle.state == PENDING:
                    break
                if handle.state == FAILED:
                    acks.popleft()
                    if kind == codec.PUBREC and self.session is not None:
                        self.session.released_qos2(pid)  # its resend is a new message
                    continue
            acks.popleft()
            self.write(codec.ack(kind, pid))

"""One network connection: CONNECT, the packet loop, and what happens when it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from amqtt.contexts import Action

from hub.broker import codec
from hub.broker.codec import ProtocolError
from hub.broker.session import Message, Session
from hub.broker.transports import Transport

if TYPE_CHECKING:
    from hub.broker.core import BrokerCore

log = logging.getLogger(__name__)
FLUSH_AT = 16 * 1024  # bytes of coalesced writes that go out without waiting for the loop


class RateLimit:
    """A token bucket of ``rate`` messages a second with a burst of twice that; 0 is no limit."""

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


class Connection:
    """Reads packets from a transport and acts on them; the session's link while connected."""

    def __init__(self, core: BrokerCore, transport: Transport) -> None:
        self.core = core
        self.transport = transport
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
        self.acl: dict[str, bool] = {}  # topic -> publish verdict (BrokerCore.may_publish_now)
        self.rate = RateLimit(core.settings.rate_limit)
        self._drainer: asyncio.Task[None] | None = None
        self._out: list[bytes] | None = None  # packets waiting for the coalesced write
        self._out_bytes = 0

    @property
    def identity(self) -> object:
        """What the authentication plugin made of this client (hub.security.Identity)."""
        return getattr(self.plugin_session, "identity", None)

    def __repr__(self) -> str:
        host, port = self.transport.peer
        return f"{self.client_id or '(connecting)'}@{host}:{port}/{self.transport.network}"

    # --- Link (what the session writes through) --------------------------------------------
    def write(self, data: bytes) -> None:
        """Coalesced: everything written before the event loop runs again leaves in one
        transport write (one send system call instead of one per packet), or every FLUSH_AT
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
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def buffered(self) -> int:
        return self._out_bytes + self.transport.buffered()

    def on_backlog(self) -> None:
        """The session queued messages because the write buffer is full: pump after a drain."""
        if self._drainer is None and self.buffered() >= self.core.limits.high_water:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.session is not None and self.session.link is self:
                self.flush()
                await self.transport.drain()
                if self.session.pump():
                    return
                await asyncio.sleep(0)
        finally:
            self._drainer = None

    def kill(self, reason: str, *, will: bool = True) -> None:
        """Closes the connection from our side; the will is published unless told otherwise."""
        if self.close_reason is None:
            self.close_reason = reason
        self.publish_will = self.publish_will and will
        self.transport.abort()

    # --- the connection's life -------------------------------------------------------------
    async def run(self) -> None:
        parser = codec.Parser(self.core.max_packet)
        try:
            packets = await asyncio.wait_for(self._read_connect(parser), self.core.connect_timeout)
        except (TimeoutError, EOFError) as exc:
            # Health probes and port scanners connect and close: not worth more than debug.
            what = "sent no CONNECT in time" if isinstance(exc, TimeoutError) else "closed"
            log.debug("%s %s before CONNECT", self, what)
            self.transport.abort()
            return
        except ProtocolError as exc:
            log.info("%s refused: %s", self, exc)
            self.core.report("malformed", self, str(exc))
            self.transport.abort()
            return
        try:
            connect = codec.parse_connect(packets[0])
        except ProtocolError as exc:
            log.info("%s refused: %s", self, exc)
            self.core.report("malformed", self, str(exc))
            self.transport.abort()
            return
        if not await self._accept(connect):
            return
        try:
            await self._handle_all(packets[1:])
            while self.close_reason is None:
                data = await self.transport.read()
                if not data:
                    self.close_reason = self.close_reason or "connection lost"
                    break
                self.last_rx = time.monotonic()
                await self._handle_all(parser.feed(data))
        except ProtocolError as exc:
            self.close_reason = f"protocol error: {exc}"
            kind = "payload_too_large" if isinstance(exc, codec.PayloadTooLarge) else "malformed"
            self.core.report(kind, self, str(exc))
        finally:
            if self.close_reason != "disconnect":
                self.transport.abort()
            await self.core.connection_ended(self)

    async def _read_connect(self, parser: codec.Parser) -> list[codec.Packet]:
        while True:
            data = await self.transport.read()
            if not data:
                raise EOFError
            packets = parser.feed(data)
            if packets:
                return packets

    async def _accept(self, connect: codec.Connect) -> bool:
        self.connect = connect
        if not connect.protocol_ok:
            return await self._refuse(codec.REFUSED_PROTOCOL_VERSION, "protocol version")
        if not connect.client_id and not connect.clean_session:
            return await self._refuse(codec.REFUSED_IDENTIFIER, "empty client id [MQTT-3.1.3-8]")
        self.client_id = connect.client_id or self.core.new_client_id()
        self.username = connect.username
        if not await self.core.authenticate(self):
            verdict = getattr(self.plugin_session, "verdict", None)
            bad_credentials = getattr(verdict, "bad_credentials", False)
            code = (
                codec.REFUSED_BAD_CREDENTIALS if bad_credentials else codec.REFUSED_NOT_AUTHORIZED
            )
            why = getattr(verdict, "reason", "") or "not authorized"
            return await self._refuse(code, why, getattr(verdict, "event", "") or "auth_failure")
        if connect.keepalive:
            self.keepalive_limit = connect.keepalive * 1.5  # [MQTT-3.1.2-24]
        self.last_rx = time.monotonic()
        self.session, present = self.core.take_session(self)
        self.transport.write(codec.connack(present, codec.ACCEPTED))
        self.session.attach(self)
        self.core.connection_started(self)
        return True

    async def _refuse(self, code: int, why: str, event: str = "refused") -> bool:
        log.info("%s refused: %s", self, why)
        self.core.report(event, self, why)
        self.transport.write(codec.connack(False, code))
        await self.transport.close()
        return False

    # --- packets ---------------------------------------------------------------------------
    async def _handle_all(self, packets: list[codec.Packet]) -> None:
        for packet in packets:
            if self.close_reason is not None:
                return
            await self._handle(packet)

    async def _handle(self, p: codec.Packet) -> None:
        session = self.session
        assert session is not None
        kind = p.kind
        if kind == codec.PUBLISH:
            await self._on_publish(codec.parse_publish(p, self.core.max_payload))
        elif kind == codec.PUBACK:
            session.on_puback(codec.parse_pid(p))
        elif kind == codec.PUBREC:
            session.on_pubrec(codec.parse_pid(p))
        elif kind == codec.PUBREL:
            if p.flags != 0x02:
                raise ProtocolError("PUBREL flags must be 0010 [MQTT-3.6.1-1]")
            pid = codec.parse_pid(p)
            session.incoming_qos2.discard(pid)
            self.write(codec.ack(codec.PUBCOMP, pid))
        elif kind == codec.PUBCOMP:
            session.on_pubcomp(codec.parse_pid(p))
        elif kind == codec.SUBSCRIBE:
            await self.core.subscribe(self, *codec.parse_subscribe(p))
        elif kind == codec.UNSUBSCRIBE:
            pid, filters = codec.parse_unsubscribe(p)
            self.core.unsubscribe(self, filters)
            self.write(codec.ack(codec.UNSUBACK, pid))
        elif kind == codec.PINGREQ:
            self.write(codec.PINGRESP_PACKET)
        elif kind == codec.DISCONNECT:
            self.close_reason = "disconnect"
            self.publish_will = False  # [MQTT-3.14.4-3]
            self.flush()
            await self.transport.close()
        elif kind == codec.CONNECT:
            raise ProtocolError("second CONNECT on one connection [MQTT-3.1.0-2]")
        else:
            raise ProtocolError(f"packet type {kind} is not sent by clients")

    async def _on_publish(self, pub: codec.Publish) -> None:
        if pub.topic.startswith("$"):
            raise ProtocolError(f"clients may not publish to {pub.topic!r} [MQTT-4.7.2-1]")
        session = self.session
        assert session is not None
        if pub.qos == 2 and pub.pid in session.incoming_qos2:
            self.write(codec.ack(codec.PUBREC, pub.pid))  # a resend: delivered already
            return
        allowed = self.core.may_publish_now(self, pub.topic)
        if allowed is None:
            allowed = await self.core.may(self, pub.topic, Action.PUBLISH)
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
            self.core.publish(Message(pub.topic, pub.payload, pub.qos, pub.retain), self)
        if pub.qos == 1:
            self.write(codec.ack(codec.PUBACK, pub.pid))
        elif pub.qos == 2:
            session.incoming_qos2.add(pub.pid)
            self.write(codec.ack(codec.PUBREC, pub.pid))

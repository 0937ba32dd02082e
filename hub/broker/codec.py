"""MQTT 3.1.1 packets: an incremental, strict parser and the encoders the broker needs.

No I/O here. Every malformed input raises :class:`ProtocolError` with a message naming the rule,
so the connection can be closed at once (amqtt reads packets field by field from the socket and
can hang on a remaining length that lies, or route a topic with invalid UTF-8).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# CONNACK return codes.
ACCEPTED = 0
REFUSED_PROTOCOL_VERSION = 1
REFUSED_IDENTIFIER = 2
REFUSED_BAD_CREDENTIALS = 4
REFUSED_NOT_AUTHORIZED = 5
SUBACK_FAILURE = 0x80

_U16 = struct.Struct("!H")
# Two bytes and a 16-bit number: an acknowledgement (type and flags, length 2, packet id), or
# a small PUBLISH's fixed header and topic length.
_BBH = struct.Struct("!BBH")
MAX_REMAINING_LENGTH = 268_435_455
MAX_LEVELS = 200  # topic levels in a name or filter; deeper ones close the connection


class ProtocolError(Exception):
    """The peer broke MQTT 3.1.1; the connection must be closed."""


class Packet(NamedTuple):  # a tuple: one per packet received (a frozen dataclass costs 3x)
    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    clean_session: bool
    keepalive: int
    username: str | None
    password: bytes | None
    will_topic: str | None
    will_payload: bytes
    will_qos: int
    will_retain: bool
    protocol_ok: bool  # False: answer CONNACK 1 (unacceptable protocol version) and close


class Publish(NamedTuple):  # a tuple: one per PUBLISH received
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: int


# Packet and Publish are made with tuple.__new__ on the hot path: half the cost of calling the
# class, whose generated __new__ is a Python function wrapping the same call.
_tuple = tuple.__new__


class Parser:
    """Splits a byte stream into packets; refuses packets larger than ``max_packet``.

    Whole packets are cut straight from the bytes received; only a packet split across reads
    is kept in a buffer, so an idle connection holds none.
    """

    __slots__ = ("_buf", "max_packet")

    def __init__(self, max_packet: int) -> None:
        self.max_packet = max_packet
        self._buf: bytearray | None = None

    def feed(self, data: bytes, limit: int = 0) -> list[Packet]:
        """The whole packets in what arrived so far; at most ``limit`` of them (0: all), the
        rest stays buffered (before CONNECT only the first packet is cut, so a big message
        of garbage is refused without splitting it)."""
        packets: list[Packet] = []
        buf = self._buf
        if buf is None:
            pos = self._split(data, packets, limit)
            if pos < len(data):
                self._buf = bytearray(data[pos:])
            return packets
        buf.extend(data)
        pos = self._split(buf, packets, limit)
        if pos == len(buf):
            self._buf = None
        elif pos:
            del buf[:pos]
        return packets

    def _split(self, buf: bytes | bytearray, packets: list[Packet], limit: int) -> int:
        """Appends the whole packets at the start of buf; returns where the rest begins."""
        pos = 0
        end = len(buf)
        while end - pos >= 2 and not (limit and len(packets) >= limit):
            first = buf[pos]
            length = buf[pos + 1]
            i = pos + 2
            if length & 0x80:  # more than one byte of remaining length (a packet of 128 or more)
                length, i = _remaining_length(buf, pos + 1, end)
                if i < 0:
                    break  # the length field itself has not fully arrived
            if length > self.max_packet:
                raise ProtocolError(
                    f"packet of {length} bytes exceeds the limit of {self.max_packet}"
                )
            if end - i < length:
                break
            packets.append(_tuple(Packet, (first >> 4, first & 0x0F, bytes(buf[i : i + length]))))
            pos = i + length
        return pos

    @property
    def pending(self) -> int:
        return len(self._buf) if self._buf is not None else 0


def _remaining_length(buf: bytes | bytearray, i: int, end: int) -> tuple[int, int]:
    """The remaining length field starting at buf[i] and where the packet's body begins, or
    (0, -1) while the field has not fully arrived."""
    length = 0
    multiplier = 1
    for _ in range(4):
        if i >= end:
            return 0, -1
        byte = buf[i]
        i += 1
        length += (byte & 0x7F) * multiplier
        multiplier <<= 7
        if not byte & 0x80:
            return length, i
    raise ProtocolError("remaining length longer than 4 bytes")


def _string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    raw, pos = _binary(body, pos, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in text:
        raise ProtocolError(f"{what} contains U+0000 [MQTT-1.5.3-2]")
    return text, pos


def _binary(body: bytes, pos: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: packet ends inside a length field")
    (n,) = _U16.unpack_from(body, pos)
    pos += 2
    if pos + n > len(body):
        raise ProtocolError(f"{what}: length {n} runs past the end of the packet")
    return body[pos : pos + n], pos + n


def _short(text: str) -> str:
    """A topic as error messages and logs show it: long ones cut."""
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}... ({len(text)} characters)"


def check_depth(topic: str, what: str) -> None:
    """Names and filters deeper than MAX_LEVELS close the connection (issue #15)."""
    if topic.count("/") >= MAX_LEVELS:
        raise ProtocolError(
            f"{what} has {topic.count('/') + 1} levels, more than {MAX_LEVELS}: {_short(topic)}"
        )


def check_topic_name(topic: str) -> None:
    if not topic:
        raise ProtocolError("empty topic name [MQTT-4.7.3-1]")
    if "+" in topic or "#" in topic:
        raise ProtocolError(f"wildcard in topic name {_short(topic)} [MQTT-3.3.2-2]")
    check_depth(topic, "topic name")


def parse_connect(p: Packet) -> Connect:
    if p.kind != CONNECT:
        raise ProtocolError("the first packet must be CONNECT [MQTT-3.1.0-1]")
    body = p.body
    name, pos = _binary(body, 0, "protocol name")
    if pos + 4 > len(body):
        raise ProtocolError("CONNECT variable header is truncated")
    level, flags = body[pos], body[pos + 1]
    (keepalive,) = _U16.unpack_from(body, pos + 2)
    pos += 4
    if name not in (b"MQTT", b"MQIsdp"):
        raise ProtocolError(f"unknown protocol name {name!r} [MQTT-3.1.2-1]")
    protocol_ok = name == b"MQTT" and level == 4
    if flags & 0x01:
        raise ProtocolError("CONNECT reserved flag is set [MQTT-3.1.2-3]")
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise ProtocolError("will QoS 3 [MQTT-3.1.2-14]")
    if not will_flag and (will_qos or will_retain):
        raise ProtocolError("will QoS or retain set without a will [MQTT-3.1.2-13]")
    if flags & 0x40 and not flags & 0x80:
        raise ProtocolError("password flag without username flag [MQTT-3.1.2-22]")
    client_id, pos = _string(body, pos, "client id")
    will_topic = None
    will_payload = b""
    if will_flag:
        will_topic, pos = _string(body, pos, "will topic")
        check_topic_name(will_topic)
        will_payload, pos = _binary(body, pos, "will message")
    username = password = None
    if flags & 0x80:
        username, pos = _string(body, pos, "user name")
    if flags & 0x40:
        password, pos = _binary(body, pos, "password")
    if pos != len(body):
        raise ProtocolError("CONNECT has bytes after its payload")
    return Connect(
        client_id,
        bool(flags & 0x02),
        keepalive,
        username,
        password,
        will_topic,
        will_payload,
        will_qos,
        will_retain,
        protocol_ok,
    )


TOPIC_CACHE = 4096  # topic names whose checks are remembered, by their bytes
CACHED_TOPIC_MAX = 128  # longer names are checked every time: the cache stays under 1 MB
_topics: dict[bytes, str] = {}


def _topic_name(body: bytes) -> tuple[str, int]:
    """The PUBLISH's topic name, checked; names already seen are looked up, not re-checked."""
    if len(body) >= 2:
        end = 2 + (body[0] << 8 | body[1])
        if end <= len(body):
            topic = _topics.get(body[2:end])
            if topic is not None:
                return topic, end
    topic, pos = _string(body, 0, "topic name")
    check_topic_name(topic)
    if pos <= CACHED_TOPIC_MAX + 2:
        if len(_topics) >= TOPIC_CACHE:
            _topics.clear()
        _topics[body[2:pos]] = topic
    return topic, pos


def parse_publish(p: Packet, max_payload: int) -> Publish:
    flags = p.flags
    qos = (flags >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    body = p.body
    size = len(body)
    topic = None
    if size >= 2:  # a topic name seen before: one look-up (the rest of _topic_name inlined)
        pos = 2 + (body[0] << 8 | body[1])
        if pos <= size:
            topic = _topics.get(body[2:pos])
    if topic is None:
        topic, pos = _topic_name(body)
    pid = 0
    if qos:
        if pos + 2 > size:
            raise ProtocolError("PUBLISH is missing its packet id")
        pid = body[pos] << 8 | body[pos + 1]
        pos += 2
        if pid == 0:
            raise ProtocolError("packet id 0 [MQTT-2.3.1-1]")
    payload = body[pos:]
    if size - pos > max_payload:
        raise PayloadTooLarge(f"payload of {size - pos} bytes exceeds the limit of {max_payload}")
    return _tuple(Publish, (topic, payload, qos, (flags & 1) != 0, (flags & 8) != 0, pid))


class PayloadTooLarge(ProtocolError):
    """A PUBLISH carries more than the configured maximum payload."""


def parse_pid(p: Packet) -> int:
    if len(p.body) != 2:
        raise ProtocolError(f"packet type {p.kind} must have a 2-byte body")
    (pid,) = _U16.unpack_from(p.body)
    return int(pid)


UNCHECKED = ("", 0)  # a filter past parse_subscribe's limit: counted, not decoded


def parse_subscribe(p: Packet, limit: int = 0) -> tuple[int, list[tuple[str, int]]]:
    """The packet id and the (filter, QoS) pairs; past ``limit`` filters (0: none) the rest
    are only counted, each as UNCHECKED (the broker refuses them unread)."""
    if p.flags != 0x02:
        raise ProtocolError("SUBSCRIBE flags must be 0010 [MQTT-3.8.1-1]")
    pid = parse_pid(Packet(p.kind, p.flags, p.body[:2]))
    pos = 2
    filters: list[tuple[str, int]] = []
    while pos < len(p.body):
        if limit and len(filters) >= limit:
            filters.extend([UNCHECKED] * _count_filters(p.body, pos))
            break
        topic_filter, pos = _string(p.body, pos, "topic filter")
        check_depth(topic_filter, "topic filter")
        if pos >= len(p.body):
            raise ProtocolError("SUBSCRIBE filter without a QoS byte")
        qos = p.body[pos]
        pos += 1
        if qos > 2:
            raise ProtocolError(f"SUBSCRIBE with requested QoS {qos} [MQTT-3-8.3-4]")
        filters.append((topic_filter, qos))
    if not filters:
        raise ProtocolError("SUBSCRIBE without a filter [MQTT-3.8.3-3]")
    return pid, filters


def _count_filters(body: bytes, pos: int) -> int:
    """How many (filter, QoS) pairs the rest of a SUBSCRIBE holds, from their lengths."""
    count = 0
    end = len(body)
    while pos < end:
        if pos + 2 > end:
            raise ProtocolError("topic filter: packet ends inside a length field")
        pos += 3 + (body[pos] << 8 | body[pos + 1])
        if pos > end:
            raise ProtocolError("SUBSCRIBE filter runs past the end of the packet")
        count += 1
    return count


def parse_unsubscribe(p: Packet) -> tuple[int, list[str]]:
    if p.flags != 0x02:
        raise ProtocolError("UNSUBSCRIBE flags must be 0010 [MQTT-3.10.1-1]")
    pid = parse_pid(Packet(p.kind, p.flags, p.body[:2]))
    pos = 2
    filters: list[str] = []
    while pos < len(p.body):
        topic_filter, pos = _string(p.body, pos, "topic filter")
        check_depth(topic_filter, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without a filter [MQTT-3.10.3-2]")
    return pid, filters


# --- encoders -------------------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connack(session_present: bool, code: int) -> bytes:
    return bytes((0x20, 2, int(session_present), code))


def publish(
    topic: bytes, payload: bytes, qos: int, retain: bool, pid: int = 0, dup: bool = False
) -> bytes:
    # Sent for every delivery: a small packet's fixed header and topic length are one bytes().
    size = len(topic)
    remaining = 2 + size + len(payload) + (2 if qos else 0)
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    if remaining < 128:
        head = _BBH.pack(first, remaining, size)
    else:
        head = bytes((first,)) + _length(remaining) + _U16.pack(size)
    if qos:
        return b"".join((head, topic, _U16.pack(pid), payload))
    return head + topic + payload


ACK_PACK = _BBH.pack  # ACK_PACK(0x40, 2, pid) is a PUBACK in one call (the hot path's ack)


def ack(kind: int, pid: int) -> bytes:
    return _BBH.pack(kind << 4 | (0x02 if kind == PUBREL else 0), 2, pid)


def suback(pid: int, codes: list[int]) -> bytes:
    return bytes((0x90,)) + _length(2 + len(codes)) + _U16.pack(pid) + bytes(codes)


PINGRESP_PACKET = b"\xd0\x00"

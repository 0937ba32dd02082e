# MQTT 3.1.1 framing for node/link.py, on the link's socket and its preallocated buffers: exact
# reads, the remaining length, and the CONNECT, PUBLISH and SUBSCRIBE packets, a reading's
# PUBLISH in one write (one TCP segment). An incoming PUBLISH goes to the link's callback and
# is acknowledged at QoS 1. Every read and write is bounded by the socket's timeout (set by the
# link). No policy here: the link decides what is sent when, and what an answer means.
# Plain functions taking the link rather than a base class of it: on MicroPython a class costs
# a board more heap than a module of functions.
import struct
import time

from micropython import const

_PUBACK = const(0x40)
_PKT = const(256)  # the size of link._pkt: a PUBLISH that fits goes out in one write


def read(link, n):
    data = link.sock.read(n)
    if not data:
        raise OSError(-1)  # the hub closed the connection
    while len(data) < n:
        more = link.sock.read(n - len(data))
        if not more:
            raise OSError(-1)
        data += more
    return data


def recv_len(link):
    n = 0
    shift = 0
    while True:
        b = read(link, 1)[0]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n
        shift += 7


def write_head(link, first, size):
    head = link._head
    head[0] = first
    i = 1
    while size > 0x7F:
        head[i] = (size & 0x7F) | 0x80
        size >>= 7
        i += 1
    head[i] = size
    link.sock.write(head, i + 1)


def send_connect(link, clean_session):
    # umqtt.simple's will, credentials and string framing, written without its buffers.
    flags = clean_session << 1
    size = 12 + len(link.client_id)
    if link.user is not None:
        flags |= 0xC0
        size += 4 + len(link.user) + len(link.pswd)
    if link.lw_topic:
        flags |= 0x04 | link.lw_qos << 3 | link.lw_retain << 5
        size += 4 + len(link.lw_topic) + len(link.lw_msg)
    write_head(link, 0x10, size)
    link.sock.write(b"\x00\x04MQTT\x04")
    link.sock.write(bytes((flags, link.keepalive >> 8, link.keepalive & 0xFF)))
    link._send_str(link.client_id)
    if link.lw_topic:
        link._send_str(link.lw_topic)
        link._send_str(link.lw_msg)
    if link.user is not None:
        link._send_str(link.user)
        link._send_str(link.pswd)


def send_publish(link, topic, msg, retain, qos, pid, dup):
    first = 0x30 | dup << 3 | qos << 1 | retain
    size = 2 + len(topic) + len(msg) + (2 if qos else 0)
    if size + 2 <= _PKT and size < 128:
        # The usual case, a reading: assembled in the preallocated buffer, one write.
        p = link._pkt
        p[0] = first
        p[1] = size
        struct.pack_into("!H", p, 2, len(topic))
        n = 4 + len(topic)
        p[4:n] = topic
        if qos:
            struct.pack_into("!H", p, n, pid)
            n += 2
        p[n:n + len(msg)] = msg
        link.sock.write(link._pkt_mv[:n + len(msg)])
    else:
        write_head(link, first, size)
        link._send_str(topic)
        if qos:
            struct.pack_into("!H", link._head, 0, pid)
            link.sock.write(link._head, 2)
        link.sock.write(msg)
    link.last_tx = time.ticks_ms()


def send_subscribe(link, topic, qos, pid):
    write_head(link, 0x82, 5 + len(topic))
    struct.pack_into("!H", link._head, 0, pid)
    link.sock.write(link._head, 2)
    link._send_str(topic)
    link.sock.write(bytes((qos,)))
    link.last_tx = time.ticks_ms()


def receive_publish(link, op, size):
    topic_len = read(link, 2)
    topic_len = topic_len[0] << 8 | topic_len[1]
    topic = read(link, topic_len)
    size -= topic_len + 2
    pid = 0
    if op & 6:
        ack = read(link, 2)
        pid = ack[0] << 8 | ack[1]
        size -= 2
    rx = link.rx  # a buffer for app update chunks (node/ota.py), if any
    if rx is not None and 0 < size <= len(rx):
        mv = memoryview(rx)[:size]
        n = 0
        while n < size:  # into the buffer: no allocation, so no heap fragment to find
            got = link.sock.readinto(mv[n:])
            if not got:
                raise OSError(-1)
            n += got
        msg = mv if rx[0] == 1 else bytes(mv)  # a chunk is used at once; the rest is kept
    else:
        msg = read(link, size) if size > 0 else b""
    link.cb(topic, msg)
    if op & 6 == 2:
        link.sock.write(bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))

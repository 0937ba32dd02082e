# MQTT session policy over umqtt.simple: every read and write bounded by a socket timeout,
# our own keepalive pings, packet ids that wrap 65535 -> 1, and QoS 1 publishes that never
# block: they stay in flight (in send order) until their PUBACK, are resent with DUP on the
# same id after ack_timeout, and again right after a reconnect.
# umqtt.simple's constructor, will, callback and string framing are reused (they are the same
# in 1.3.4 and 1.6.0); its connect, publish, subscribe and wait_msg are replaced because they
# block without bound, and TLS takes an SSLContext (1.6.0 style) whatever umqtt is installed.
import select
import socket
import struct
import time

from micropython import const
from umqtt.simple import MQTTClient, MQTTException

_CONNACK = const(0x20)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_MAX_INFLIGHT = const(16)
_MAX_PACKETS_PER_CHECK = const(8)
_PKT = const(256)  # a PUBLISH up to this size goes out in one write (one TCP segment)


class Link(MQTTClient):
    def __init__(self, client_id, host, port, user=None, password=None, keepalive_s=30,
                 io_timeout_s=5, ack_timeout_s=10, ssl_context=None):
        super().__init__(client_id, host, port, user, password, keepalive_s)
        self.io_timeout = io_timeout_s
        self.ack_timeout_ms = ack_timeout_s * 1000
        self.ssl_context = ssl_context
        self.connected = False
        self.inflight = []  # [pid, topic, msg, retain, sent_ms], oldest first
        self.pid = 0
        self.last_tx = 0
        self.last_rx = 0
        self._ping_ms = 0
        self._addr = None
        self._poller = None
        self._suback = None
        self._head = bytearray(5)
        self._pkt = bytearray(_PKT)
        self._pkt_mv = memoryview(self._pkt)

    # --- framing -----------------------------------------------------------------------
    def _read(self, n):
        data = self.sock.read(n)
        if not data:
            raise OSError(-1)  # the hub closed the connection
        while len(data) < n:
            more = self.sock.read(n - len(data))
            if not more:
                raise OSError(-1)
            data += more
        return data

    def _recv_len(self):
        n = 0
        shift = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def _write_head(self, first, size):
        head = self._head
        head[0] = first
        i = 1
        while size > 0x7F:
            head[i] = (size & 0x7F) | 0x80
            size >>= 7
            i += 1
        head[i] = size
        self.sock.write(head, i + 1)

    def _next_pid(self):
        pid = self.pid
        while True:
            pid = pid % 65535 + 1  # 1..65535: 0 is not a valid packet id
            if not self.pending(pid):
                self.pid = pid
                return pid

    def pending(self, pid):
        # True while a QoS 1 publish with this packet id waits for its PUBACK.
        for entry in self.inflight:
            if entry[0] == pid:
                return True
        return False

    # --- session -----------------------------------------------------------------------
    def connect(self, clean_session=True):
        if self._addr is None:  # resolve the hub once
            self._addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        self.close()
        sock = socket.socket()
        sock.settimeout(self.io_timeout)
        try:
            sock.connect(self._addr)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server)
        except Exception:
            sock.close()
            raise
        self.sock = sock
        flags = clean_session << 1
        size = 12 + len(self.client_id)
        if self.user is not None:
            flags |= 0xC0
            size += 4 + len(self.user) + len(self.pswd)
        if self.lw_topic:
            flags |= 0x04 | self.lw_qos << 3 | self.lw_retain << 5
            size += 4 + len(self.lw_topic) + len(self.lw_msg)
        self._write_head(0x10, size)
        self.sock.write(b"\x00\x04MQTT\x04")
        self.sock.write(bytes((flags, self.keepalive >> 8, self.keepalive & 0xFF)))
        self._send_str(self.client_id)
        if self.lw_topic:
            self._send_str(self.lw_topic)
            self._send_str(self.lw_msg)
        if self.user is not None:
            self._send_str(self.user)
            self._send_str(self.pswd)
        resp = self._read(4)
        if resp[0] != _CONNACK or resp[1] != 2:
            raise OSError(-2)  # not an MQTT broker
        if resp[3]:
            raise MQTTException(resp[3])  # refused: 4 bad credentials, 5 not authorized
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self.connected = True
        now = self.last_tx = self.last_rx = self._ping_ms = time.ticks_ms()
        for entry in self.inflight:  # unacknowledged publishes go again, oldest first
            entry[4] = now
            self._send_publish(entry[1], entry[2], entry[3], 1, entry[0], 1)
        return resp[2] & 1

    def close(self):
        # Drop the connection without DISCONNECT (the hub then publishes our will).
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._poller = None
        self.connected = False

    def disconnect(self):
        if self.sock is not None:
            try:
                self.sock.write(b"\xe0\0")
            except OSError:
                pass
        self.close()

    # --- outgoing ----------------------------------------------------------------------
    def can_publish(self):
        return self.connected and len(self.inflight) < _MAX_INFLIGHT

    def publish(self, topic, msg, retain=False, qos=0):
        pid = self._next_pid() if qos else 0
        if qos:
            self.inflight.append([pid, topic, msg, retain, time.ticks_ms()])
        self._send_publish(topic, msg, retain, qos, pid, 0)
        return pid

    def _send_publish(self, topic, msg, retain, qos, pid, dup):
        first = 0x30 | dup << 3 | qos << 1 | retain
        size = 2 + len(topic) + len(msg) + (2 if qos else 0)
        if size + 2 <= _PKT and size < 128:
            # The usual case, a reading: assembled in the preallocated buffer, one write.
            p = self._pkt
            p[0] = first
            p[1] = size
            struct.pack_into("!H", p, 2, len(topic))
            n = 4 + len(topic)
            p[4:n] = topic
            if qos:
                struct.pack_into("!H", p, n, pid)
                n += 2
            p[n:n + len(msg)] = msg
            self.sock.write(self._pkt_mv[:n + len(msg)])
        else:
            self._write_head(first, size)
            self._send_str(topic)
            if qos:
                struct.pack_into("!H", self._head, 0, pid)
                self.sock.write(self._head, 2)
            self.sock.write(msg)
        self.last_tx = time.ticks_ms()

    def subscribe(self, topic, qos=0):
        # Waits for the SUBACK, handling whatever else arrives first, within the I/O timeout.
        pid = self._next_pid()
        self._write_head(0x82, 5 + len(topic))
        struct.pack_into("!H", self._head, 0, pid)
        self.sock.write(self._head, 2)
        self._send_str(topic)
        self.sock.write(bytes((qos,)))
        self.last_tx = time.ticks_ms()
        self._suback = None
        start = time.ticks_ms()
        while self._suback is None or self._suback[0] != pid:
            if time.ticks_diff(time.ticks_ms(), start) > self.io_timeout * 1000:
                raise OSError(110)  # ETIMEDOUT
            self.wait_msg()
        if self._suback[1] == 0x80:
            raise MQTTException(0x80)  # the hub refused the subscription

    def ping(self):
        self.sock.write(b"\xc0\0")
        self.last_tx = self._ping_ms = time.ticks_ms()

    # --- incoming ----------------------------------------------------------------------
    def wait_msg(self):
        op = self._read(1)[0]
        self.last_rx = time.ticks_ms()
        size = self._recv_len()
        if op & 0xF0 == 0x30:
            self._receive_publish(op, size)
        elif op == _PUBACK and size == 2:
            ack = self._read(2)
            pid = ack[0] << 8 | ack[1]
            for i in range(len(self.inflight)):
                if self.inflight[i][0] == pid:
                    self.inflight.pop(i)
                    break
        elif op == _SUBACK and size == 3:
            ack = self._read(3)
            self._suback = (ack[0] << 8 | ack[1], ack[2])
        elif size:
            self._read(size)  # PINGRESP has none; skip anything else we do not use
        return op

    def _receive_publish(self, op, size):
        topic_len = self._read(2)
        topic_len = topic_len[0] << 8 | topic_len[1]
        topic = self._read(topic_len)
        size -= topic_len + 2
        pid = 0
        if op & 6:
            ack = self._read(2)
            pid = ack[0] << 8 | ack[1]
            size -= 2
        msg = self._read(size) if size > 0 else b""
        self.cb(topic, msg)
        if op & 6 == 2:
            self.sock.write(bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))

    def check_msg(self):
        # Handles the packets already waiting, a bounded number, and returns at once otherwise.
        for _ in range(_MAX_PACKETS_PER_CHECK):
            if not self._poller.poll(0):
                return
            self.wait_msg()

    def service(self):
        # Call often: reads what arrived, pings when idle, resends unacknowledged QoS 1 publishes
        # and raises OSError when the hub has gone silent past 1.5 x keepalive.
        self.check_msg()
        now = time.ticks_ms()
        keepalive_ms = self.keepalive * 1000
        if time.ticks_diff(now, self.last_rx) > keepalive_ms * 3 // 2:
            raise OSError(110)  # no PINGRESP or anything else: the link is dead
        idle = max(time.ticks_diff(now, self.last_tx), time.ticks_diff(now, self.last_rx))
        if idle >= keepalive_ms // 2 and time.ticks_diff(now, self._ping_ms) >= keepalive_ms // 4:
            self.ping()
        for entry in self.inflight:
            if time.ticks_diff(now, entry[4]) >= self.ack_timeout_ms:
                entry[4] = now
                self._send_publish(entry[1], entry[2], entry[3], 1, entry[0], 1)

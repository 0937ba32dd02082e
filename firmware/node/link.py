# MQTT session policy over umqtt.simple: every read and write bounded by a socket timeout,
# our own keepalive pings, packet ids that wrap 65535 -> 1, and QoS 1 publishes that never
# block: they stay in flight (in send order) until their PUBACK, are resent with DUP on the
# same id after ack_timeout, and again right after a reconnect.
# umqtt.simple's connect, publish, subscribe and wait_msg are replaced because they block
# without bound, and TLS takes an SSLContext (1.6.0 style) whatever umqtt is installed. Its
# constructor, will, callback and string framing are reused (the same in 1.3.4 and 1.6.0);
# node/wire.py frames the packets.
import select
import socket
import time

from micropython import const
from umqtt.simple import MQTTClient, MQTTException

from node import wire

_CONNACK = const(0x20)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
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
        self._poller = None
        self._suback = None
        self._head = bytearray(5)  # node/wire.py's buffers
        self._pkt = bytearray(_PKT)
        self._pkt_mv = memoryview(self._pkt)
        self.rx = None  # node/wire.py reads app update chunks into it, while one downloads

    # --- packet ids and QoS 1 in flight ------------------------------------------------
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
    def target(self, host, port):
        # The hub the next connect() goes to (node/session.py moves through the settings' list).
        self.server = host
        self.port = port

    def connect(self, clean_session=True):
        # Resolved once per attempt: a hub that moved (DNS) is found on the next one.
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        self.close()
        sock = socket.socket()
        sock.settimeout(self.io_timeout)
        try:
            sock.connect(addr)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server)
        except Exception:
            sock.close()
            raise
        self.sock = sock
        wire.send_connect(self, clean_session)
        resp = wire.read(self, 4)
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
            wire.send_publish(self, entry[1], entry[2], entry[3], 1, entry[0], 1)
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
    def publish(self, topic, msg, retain=False, qos=0):
        pid = self._next_pid() if qos else 0
        if qos:
            self.inflight.append([pid, topic, msg, retain, time.ticks_ms()])
        wire.send_publish(self, topic, msg, retain, qos, pid, 0)
        return pid

    def subscribe(self, topic, qos=0):
        # Waits for the SUBACK, handling whatever else arrives first, within the I/O timeout.
        pid = self._next_pid()
        wire.send_subscribe(self, topic, qos, pid)
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
        op = wire.read(self, 1)[0]
        self.last_rx = time.ticks_ms()
        size = wire.recv_len(self)
        if op & 0xF0 == 0x30:
            wire.receive_publish(self, op, size)
        elif op == _PUBACK and size == 2:
            ack = wire.read(self, 2)
            pid = ack[0] << 8 | ack[1]
            for i in range(len(self.inflight)):
                if self.inflight[i][0] == pid:
                    self.inflight.pop(i)
                    break
        elif op == _SUBACK and size == 3:
            ack = wire.read(self, 3)
            self._suback = (ack[0] << 8 | ack[1], ack[2])
        elif size:
            wire.read(self, size)  # PINGRESP has none; skip anything else we do not use
        return op

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
                wire.send_publish(self, entry[1], entry[2], entry[3], 1, entry[0], 1)

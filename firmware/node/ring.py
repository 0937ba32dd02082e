# Store-and-forward: a bounded ring of readings in one flash file that survives reboots.
#
# Every reading goes into the ring first and leaves it only when its PUBACK has arrived, so a
# reboot or a dead link never loses one; the ring is sent oldest-first. Readings are absolute
# indexes: slot = index % capacity. The file is a 20-byte header then `capacity` records of
# _REC bytes: marker, channel, payload length, 0, the reading's index (u32), a CRC32 of those
# 8 bytes and the payload (u32), the payload. A record torn by a power cut or with a damaged
# byte fails its check: get() refuses it (None, the app skips it) and the readings around it
# are kept. The header's `next` is only a hint (records carry their index, so a reboot finds
# the true end by scanning) and its `first` is written lazily: a stale `first` resends
# readings the hub already has, which it drops by (boot, seq). A full ring overwrites its
# oldest reading and counts it in `dropped`. A ring written before records had a checksum
# (magic RQ1) is migrated by node/ringold.py, imported only then.
import struct
import time
from binascii import crc32  # in every port the boards run (ESP32, ESP32-S3, unix)

from micropython import const

_MAGIC = b"RQ2"
_HEAD = const(20)
_REC = const(52)
_DATA = const(12)  # the payload's offset in a record
_MAX_PAYLOAD = const(40)
_MARK = const(0xA5)
_SYNC_MS = const(2000)


class Ring:
    def __init__(self, path, capacity):
        self.path = path
        self.first = 0  # the oldest reading not yet acknowledged
        self.next = 0  # the index the next reading gets
        self.dropped = 0
        self._buf = bytearray(_REC)
        self._mv = memoryview(self._buf)
        self._mv8 = self._mv[:8]  # what the checksum covers before the payload, made once
        self._head = bytearray(_HEAD)
        self._dirty = False
        self._synced = time.ticks_ms()
        try:
            self._f = open(path, "r+b")
        except OSError:
            self._f = None
        if self._f is None or not self._load(capacity):
            self._format(capacity)

    def _load(self, capacity):
        f = self._f
        f.seek(0)
        if f.readinto(self._head) != _HEAD:
            return False
        if self._head[:3] == b"RQ1":
            from node.ringold import migrate

            migrate(self.path, f, self._head, capacity, Ring)
            self._f = f = open(self.path, "r+b")
            f.readinto(self._head)
        if self._head[:3] != _MAGIC:
            return False
        cap, self.first, self.next, self.dropped = struct.unpack_from("<HxxIII", self._head, 4)
        self.capacity = cap
        # Readings written after the last header write: the newest record whose own index
        # follows the hint, within one lap (a damaged record on the way is skipped, not an end).
        start = self.next
        for i in range(start, start + cap):
            if self._read(i) is not None:
                self.next = i + 1
        if self.next - self.first > cap:
            self.first = self.next - cap
        if cap != capacity and self.first == self.next:
            return False  # a new capacity takes effect once nothing is waiting in the old ring
        return True

    def _format(self, capacity):
        if self._f is not None:
            self._f.close()
        self.capacity = capacity
        self.first = self.next = self.dropped = 0
        with open(self.path, "wb") as f:
            f.write(self._pack_head())
            zero = bytes(_REC)
            for _ in range(capacity):
                f.write(zero)
        self._f = open(self.path, "r+b")

    def _pack_head(self):
        h = self._head
        h[:3] = _MAGIC
        h[3] = 0
        struct.pack_into("<HxxIII", h, 4, self.capacity, self.first, self.next, self.dropped)
        return h

    def __len__(self):
        return self.next - self.first

    def _check(self, payload):
        # The CRC32 of the record's first 8 bytes (in the buffer) and its payload.
        return crc32(payload, crc32(self._mv8))

    def push(self, channel, payload):
        n = len(payload)
        if n > _MAX_PAYLOAD:
            raise ValueError("reading longer than %d bytes" % _MAX_PAYLOAD)
        if self.next - self.first >= self.capacity:
            self.first += 1  # full: the oldest reading makes room
            self.dropped += 1
            self._dirty = True
        b = self._buf
        b[0] = _MARK
        b[1] = channel
        b[2] = n
        b[3] = 0
        struct.pack_into("<I", b, 4, self.next)
        b[_DATA:_DATA + n] = payload
        struct.pack_into("<I", b, 8, self._check(payload))
        f = self._f
        f.seek(_HEAD + (self.next % self.capacity) * _REC)
        f.write(self._mv[:_DATA + n])
        f.flush()
        self.next += 1
        self._dirty = True
        return self.next - 1

    def _read(self, index):
        # The payload of reading `index` if its slot holds that reading intact, else None (the
        # channel is then in the buffer). Reads run once per reading sent, so the check makes
        # nothing but the payload it returns: no tuples, no views.
        f = self._f
        f.seek(_HEAD + (index % self.capacity) * _REC)
        b = self._buf
        if f.readinto(b) != _REC or b[0] != _MARK or b[2] > _MAX_PAYLOAD:
            return None
        if b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24 != index & 0xFFFFFFFF:
            return None
        payload = bytes(self._mv[_DATA:_DATA + b[2]])
        if b[8] | b[9] << 8 | b[10] << 16 | b[11] << 24 != self._check(payload):
            return None
        return payload

    def get(self, index):
        # Returns (channel, payload bytes) for a reading still in the ring, else None.
        if not self.first <= index < self.next:
            return None
        payload = self._read(index)
        if payload is None:
            return None
        return self._buf[1], payload

    def ack(self, index):
        # Readings are acknowledged in order: everything up to index has been delivered.
        if index >= self.first:
            self.first = index + 1
            self._dirty = True

    def sync(self, force=False):
        # Writes the header at most every _SYNC_MS (flash wear), at once when the ring drains.
        if not self._dirty:
            return
        now = time.ticks_ms()
        if force or self.first == self.next or time.ticks_diff(now, self._synced) >= _SYNC_MS:
            self._f.seek(0)
            self._f.write(self._pack_head())
            self._f.flush()
            self._dirty = False
            self._synced = now

    def close(self):
        self.sync(True)
        self._f.close()

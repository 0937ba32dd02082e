# Rings written before records had a checksum (magic RQ1: 48-byte records of marker, channel,
# length, 0, index, payload). node/ring.py imports this only when it opens such a file: the
# waiting readings are copied into a new ring file, which then replaces the old one. A power
# cut before the rename leaves the old ring to migrate again at the next boot.
import os
import struct

from micropython import const

_HEAD = const(20)
_REC = const(48)
_MARK = const(0xA5)
_MAX_PAYLOAD = const(40)


def migrate(path, f, head, capacity, ring_class):
    cap, first, end, dropped = struct.unpack_from("<HxxIII", head, 4)
    buf = bytearray(_REC)

    def read(index):
        f.seek(_HEAD + (index % cap) * _REC)
        if f.readinto(buf) != _REC or buf[0] != _MARK or buf[2] > _MAX_PAYLOAD:
            return None
        if struct.unpack_from("<I", buf, 4)[0] != index & 0xFFFFFFFF:
            return None
        return buf[1], bytes(buf[8:8 + buf[2]])

    # The header's end is a hint: the newest record within one lap after it is the true end.
    for i in range(end, end + cap):
        if read(i) is not None:
            end = i + 1
    first = max(first, end - cap)
    tmp = path + ".new"
    try:
        os.remove(tmp)  # a copy that a power cut left half made
    except OSError:
        pass
    new = ring_class(tmp, capacity)
    for i in range(first, end):
        item = read(i)
        if item is not None:
            new.push(item[0], item[1])
    new.dropped += dropped
    new.close()
    f.close()
    os.rename(tmp, path)

# Runs under the MicroPython unix port: node/ring.py's recovery after power loss. Builds ring
# files with the firmware's own Ring, then, for every byte offset of one record, a torn write
# (the record written only up to that offset) or a corrupt byte (flipped), reopens the ring and
# prints one JSON line per case: what it recovers (index, channel, payload hex, or null when
# get() refuses it) and whether a new reading can be pushed and read back. Then a ring in the
# format before records had a checksum (RQ1) is opened: its waiting readings must carry over.
import binascii
import json
import os
import struct

from node.ring import Ring

CAP = 8
PATH = "ring.bin"
_HEAD = 20
_REC = 52
_DATA = 12  # a record: marker, channel, length, 0, index, CRC32, payload


def payload(i):
    return b"b1,%d,%d.5" % (i, 18 + i * 7)


def build(count, synced_at):
    # Pushes readings 0..count-1; the header is written last just before reading synced_at.
    try:
        os.remove(PATH)
    except OSError:
        pass
    r = Ring(PATH, CAP)
    for i in range(count):
        if i == synced_at:
            r.sync(True)
        r.push(i % 3, payload(i))
    r._f.close()  # power lost: no header write since synced_at
    with open(PATH, "rb") as f:
        return f.read()


def recover(image):
    with open(PATH, "wb") as f:
        f.write(image)
    r = Ring(PATH, CAP)
    seen = []
    for i in range(r.first, r.next):
        item = r.get(i)
        if item is None:
            seen.append([i, None, None])
        else:
            seen.append([i, item[0], binascii.hexlify(item[1]).decode()])
    index = r.push(2, b"after")
    again = r.get(index) == (2, b"after")
    r.close()
    return {"first": r.first, "next": r.next, "seen": seen, "push_ok": again}


print(json.dumps({"case": "payloads", "payloads": [payload(i).decode() for i in range(12)]}))

# A torn write of reading 10 (slot 2 of 8, the ring has wrapped; header last written at 6).
before = build(10, 6)
after = build(11, 6)
pos = _HEAD + (10 % CAP) * _REC
for k in range(_DATA + len(payload(10)) + 1):
    out = recover(after[:pos + k] + before[pos + k:])
    out["case"] = "torn"
    out["offset"] = k
    print(json.dumps(out))

# A corrupt byte in reading 4 of 8 (header last written before reading 0: found by scanning).
clean = build(8, 0)
pos = _HEAD + 4 * _REC
for k in range(_DATA + len(payload(4))):
    image = bytearray(clean)
    image[pos + k] ^= 0xFF
    out = recover(bytes(image))
    out["case"] = "corrupt"
    out["offset"] = k
    print(json.dumps(out))

# An RQ1 ring (48-byte records without a checksum), as firmware before the checksum left it:
# readings 2 to 6 waiting, the header written at 4, reading 5 damaged (its index byte), and a
# half-made copy from a migration that lost power, which must not be taken for the new ring.
old = bytearray(_HEAD + CAP * 48)
old[:4] = b"RQ1\x00"
struct.pack_into("<HxxIII", old, 4, CAP, 2, 4, 1)
for i in range(7):
    rec = bytes((0xA5, i % 3, len(payload(i)), 0)) + struct.pack("<I", i) + payload(i)
    old[_HEAD + i * 48:_HEAD + i * 48 + len(rec)] = rec
old[_HEAD + 5 * 48 + 4] ^= 0xFF
with open(PATH + ".new", "wb") as f:
    f.write(b"RQ2\x00" + bytes(16))
with open(PATH, "wb") as f:
    f.write(old)
r = Ring(PATH, CAP)
seen = []
for i in range(r.first, r.next):
    item = r.get(i)
    seen.append(None if item is None else [item[0], binascii.hexlify(item[1]).decode()])
index = r.push(1, b"after")
r.close()
with open(PATH, "rb") as f:
    magic = f.read(3).decode()
r = Ring(PATH, CAP)
again = [r.get(i) is not None for i in range(r.first, r.next)]
print(json.dumps({"case": "migrated", "seen": seen, "dropped": r.dropped, "magic": magic,
                  "size": os.stat(PATH)[6], "reopened": again, "new_left": PATH + ".new" in os.listdir()}))

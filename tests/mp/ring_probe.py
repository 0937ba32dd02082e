# Runs under the MicroPython unix port: node/ring.py's recovery after power loss. Builds ring
# files with the firmware's own Ring, then, for every byte offset of one record, a torn write
# (the record written only up to that offset) or a corrupt byte (flipped), reopens the ring and
# prints one JSON line per case: what it recovers (index, channel, payload hex, or null when
# get() refuses it) and whether a new reading can be pushed and read back.
import binascii
import json
import os

from node.ring import Ring

CAP = 8
PATH = "ring.bin"
_HEAD = 20
_REC = 48


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
for k in range(8 + len(payload(10)) + 1):
    out = recover(after[:pos + k] + before[pos + k:])
    out["case"] = "torn"
    out["offset"] = k
    print(json.dumps(out))

# A corrupt byte in reading 4 of 8 (header last written before reading 0: found by scanning).
clean = build(8, 0)
pos = _HEAD + 4 * _REC
for k in range(8 + len(payload(4))):
    image = bytearray(clean)
    image[pos + k] ^= 0xFF
    out = recover(bytes(image))
    out["case"] = "corrupt"
    out["offset"] = k
    print(json.dumps(out))

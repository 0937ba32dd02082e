# Runs on the board (MicroPython), sent by tools/deploy.py with `mpremote exec` after two lines it
# puts in front: `_MARK = '...'` (prefixes every line meant for the host) and `_KEY = b'...'` (a
# one-time key). Prints every file with its SHA-256, and settings.json masked with a keystream
# derived from _KEY (sha256(_KEY + block number), tools/masking.py), so the device's secret never
# crosses the serial line, or lands in a console log, in clear.
import binascii
import hashlib
import os


def _walk(d):
    for e in os.ilistdir(d):
        p = d + "/" + e[0] if d else e[0]
        if e[1] & 0x4000:
            print(_MARK, "D", p)
            _walk(p)
            continue
        h = hashlib.sha256()
        b = bytearray(256)
        with open(p, "rb") as f:
            while True:
                n = f.readinto(b)
                if not n:
                    break
                h.update(b if n == 256 else b[:n])
        print(_MARK, "F", p, binascii.hexlify(h.digest()).decode())


_walk("")
try:
    with open("settings.json", "rb") as f:
        s = bytearray(f.read())
    for i in range(len(s)):
        if i % 32 == 0:
            k = hashlib.sha256(_KEY + bytes((i // 32 % 256,))).digest()
        s[i] ^= k[i % 32]
    print(_MARK, "S", binascii.hexlify(s).decode())
except OSError:
    pass

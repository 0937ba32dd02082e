# Installs a downloaded bundle (node/ota.py) at the next boot, from node/start.py, before the app
# takes the heap: checks every file's SHA-256 in ota/stage.bin, writes the files into the free slot
# (ota/a or ota/b, never the running app's), checks them again there, then switches the pointer
# (otaboot.py, one rename) into a trial and reboots. A power cut before the rename boots the old
# app, which installs again; after it, the new app. Reads and writes through one small buffer. A
# refused bundle is dropped and its reason left in the pointer for the app to report.
import binascii
import hashlib
import json
import os

import node
import otaboot

_BUF = 512
hook = None  # tests/mp/ota_probe.py: called with each stage's name (a simulated power cut)


def _stage(name):
    if hook is not None:
        hook(name)


def _hash(f, size, buf, out=None):
    h = hashlib.sha256()
    mv = memoryview(buf)
    while size > 0:
        n = f.readinto(mv[:min(size, _BUF)])
        if not n:
            return None
        h.update(mv[:n])
        if out is not None:
            out.write(mv[:n])
        size -= n
    return binascii.hexlify(h.digest()).decode()


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        child = path + "/" + e[0]
        if e[1] == 0x4000:
            _rmtree(child)
        else:
            os.remove(child)
    os.rmdir(path)


def _mkdirs(path):
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        try:
            os.mkdir("/".join(parts[:i]))
        except OSError:
            pass


def _files(o):
    # The manifest at the start of the download: [(path, size, sha256 hex)], checked.
    files = []
    total = o["msize"]
    with open("ota/stage.bin", "rb") as f:
        while f.tell() < o["msize"]:
            parts = f.readline().decode().split()
            if len(parts) != 3 or len(parts[2]) != 64:
                return None, "bad manifest line"
            path, size = parts[0], int(parts[1])
            if (not path.startswith("node/") or ".." in path or "//" in path
                    or not path.endswith(".mpy") or size < 0):
                return None, "bad manifest path %r" % path[:40]
            files.append((path, size, parts[2]))
            total += size
    if total != o["size"]:
        return None, "manifest sizes do not add up"
    return files, None


def at_boot():
    # From node/start.py: install a complete download (and reboot into it), or leave an
    # incomplete one to the app, which resumes it.
    from node import ota

    try:
        with open(ota.OFFER) as f:
            o = json.load(f)
        size = os.stat(ota.STAGE)[6]
    except (OSError, ValueError):
        return
    if size < o["size"]:
        return
    print("ota: installing", o["v"])
    error = install(o)
    if error is None:
        from node import hw

        hw.reboot()  # boot.py picks the new app
    print("ota: failed", error)
    ota.drop_stage()
    p = otaboot.read()
    p.update(result="failed", rv=o["v"], tag=o["tag"], why=error)
    otaboot.write(p)


def install(o):
    # None once switched, or the reason the bundle was refused.
    from node import ota

    buf = bytearray(_BUF)
    try:
        files, error = _files(o)
    except (OSError, ValueError) as exc:
        files, error = None, "bad manifest: %r" % (exc,)
    if error is not None:
        return error
    _stage("verify")
    with open(ota.STAGE, "rb") as f:
        f.seek(o["msize"])
        for path, size, digest in files:
            if _hash(f, size, buf) != digest:
                return "sha256 mismatch: %s" % path
    p = otaboot.read()
    cur = p.get("dir", "")
    slot = "b" if cur == "a" else "a"
    root = "ota/" + slot
    _rmtree(root)
    _stage("install")
    with open(ota.STAGE, "rb") as f:
        f.seek(o["msize"])
        for path, size, digest in files:
            target = root + "/" + path
            _mkdirs(target)
            with open(target, "wb") as out:
                _hash(f, size, buf, out)
            _stage("file")
    for path, size, digest in files:  # read back: what the flash holds is what boots
        with open(root + "/" + path, "rb") as f:
            if _hash(f, size, buf) != digest:
                return "sha256 mismatch after writing %s" % path
    _stage("switch")
    otaboot.write({"dir": slot, "v": o["v"], "prev": cur, "pv": node.VERSION, "trial": 1,
                   "tag": o["tag"]})
    _stage("switched")
    ota.drop_stage()
    del files
    return None

# Full firmware images over the air, for boards built with two app slots (board "ota_image":
# MicroPython's OTA variant). Loaded for an image offer and while one downloads, then unloaded.
# The hub's chunks (node/ota.py asks for them one at a time, as for an app) go straight into
# the next update slot, esp32.Partition(RUNNING).get_next_update(): each 4 KB block is erased
# when its first chunk comes, and each chunk is written at its offset from the one receive
# buffer, so nothing is buffered. The record ota/img.json (otaboot.write: a rename) keeps the
# blocks written, so a download resumes at the last whole block after a reboot. Complete: the
# SHA-256 of the slot's bytes, set_boot, a reboot into the new image on trial; the app marks it
# valid (mark_app_valid_cancel_rollback) only once its "trial" report reached the hub within
# ota_trial_s. A trial that crashes or runs out of time reboots unmarked, and the bootloader
# boots the previous slot, whose app reports rolled_back.
# Record states ("st"): dl (downloading), set (set_boot asked), trial (the new image booted),
# rb (rolled back: to report), ok (kept: "v" is what runs in slot "label", reported as fw).
# The offer's checks are node/otaimgoffer.py; what a boot finds, and keeping the image after its
# trial, node/otaimgtrial.py.
import binascii
import hashlib
import json
import os

import esp32
from micropython import const

from node.ota import report

RECORD = "ota/img.json"  # otaboot.IMAGE (otaboot.py is not loaded for a download)
_BS = const(4096)


def write(u, st):
    # As otaboot.write: a new file renamed over the old one (FAT: removed first; otaboot.read
    # finds the tmp file).
    r = {"st": st}
    for k in ("v", "tag", "size", "sha256", "chunk", "label", "from", "pv", "blocks", "tries"):
        r[k] = u.get(k)
    with open(RECORD + ".tmp", "w") as f:
        json.dump(r, f)
    try:
        os.rename(RECORD + ".tmp", RECORD)
    except OSError:
        os.remove(RECORD)
        os.rename(RECORD + ".tmp", RECORD)


def drop():
    for path in (RECORD, RECORD + ".tmp"):
        try:
            os.remove(path)
        except OSError:
            pass


def put(u, n, data):
    # Chunk n (from node/ota.on_chunk, checked there) at its offset in the slot.
    part = u["part"]
    if part is None:
        part = u["part"] = esp32.Partition(u["label"])
    addr = n * u["chunk"]
    blk, off = divmod(addr, _BS)
    if off == 0:
        part.ioctl(6, blk)  # erase the block before its first write
    part.writeblocks(blk, data, off)
    end = addr + len(data)
    if end % _BS == 0 or end >= u["size"]:  # a whole block written: a reboot resumes after it
        u["blocks"] = (end + _BS - 1) // _BS
        write(u, "dl")


def finish(app, u):
    # The whole image is in the slot (node/ota.step): check it, set_boot, reboot into a trial.
    report(app, "verifying", u)
    part = u["part"] or esp32.Partition(u["label"])
    h = hashlib.sha256()
    mv = memoryview(app.link.rx)  # the chunk buffer: no chunk comes while this runs
    addr, size = 0, u["size"]
    while addr < size:
        blk, off = divmod(addr, _BS)
        n = min(len(mv), size - addr, _BS - off)
        part.readblocks(blk, mv[:n], off)
        h.update(mv[:n])
        addr += n
    error = None
    if binascii.hexlify(h.digest()).decode() != u["sha256"]:
        error = "sha256 mismatch: the image in slot %s" % u["label"]
    else:
        write(u, "set")
        try:
            part.set_boot()
        except OSError as exc:
            error = "set_boot refused the image: %r" % (exc,)
    app.ota = None
    app.link.rx = None
    if error is not None:
        drop()
        report(app, "failed", u, error)
        return
    print("ota: image", u["v"], "set to boot from", u["label"])
    app.reboot_soon(report(app, "installing", u))

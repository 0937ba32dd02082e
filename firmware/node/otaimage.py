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
# The offer's checks are node/otaimgoffer.py; the check of the whole image and set_boot, what a
# boot finds, and keeping the image after its trial, node/otaimgtrial.py.
import json
import os

import esp32
from micropython import const

RECORD = "ota/img.json"  # otaboot.IMAGE (otaboot.py is not loaded for a download)
_BS = const(4096)


def _record(u, st):
    # The record as JSON text with the blocks written as a %d at its end: made once, so each
    # block's progress costs one formatted string.
    r = {"st": st}
    for k in ("v", "tag", "size", "sha256", "chunk", "label", "from", "pv", "tries"):
        r[k] = u.get(k)
    return json.dumps(r)[:-1].replace("%", "%%") + ', "blocks": %d}'


def write(u, st, text=None):
    # As otaboot.write: a new file renamed over the old one (FAT: removed first; otaboot.read
    # finds the tmp file).
    with open(RECORD + ".tmp", "w") as f:
        f.write((text or _record(u, st)) % u["blocks"])
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


def slot(u):
    # The next app slot, opened once the download starts (node/ota.step).
    u["rec"] = _record(u, "dl")
    return esp32.Partition(u["label"])


def put(u, n, data):
    # Chunk n (from node/ota.on_chunk, checked there) at its offset in the slot.
    part = u["part"]
    addr = n * u["chunk"]
    blk, off = divmod(addr, _BS)
    if off == 0:
        part.ioctl(6, blk)  # erase the block before its first write
    part.writeblocks(blk, data, off)
    end = addr + len(data)
    if end % _BS == 0 or end >= u["size"]:  # a whole block written: a reboot resumes after it
        u["blocks"] = (end + _BS - 1) // _BS
        write(u, "dl", u["rec"])

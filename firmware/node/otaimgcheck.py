# A downloaded firmware image (node/otaimage.py): the SHA-256 over the slot's bytes, then set_boot
# and a reboot into the trial (node/otaimgtrial.py). Loaded by node/ota.step once the last chunk
# is written, then unloaded with the download's code.
import binascii
import gc
import hashlib

import esp32
from micropython import const

from node.ota import report
from node.otaimage import drop, write

_BS = const(4096)


def finish(app, u):
    # The whole image is in the slot (node/ota.step): check it, set_boot, reboot into a trial.
    report(app, "verifying", u)
    part = u["part"] or esp32.Partition(u["label"])
    h = hashlib.sha256()
    mv = memoryview(app.link.rx)[:u["chunk"]]  # the chunk buffer: no chunk comes meanwhile
    addr, size = 0, u["size"]
    while addr < size:  # a chunk at a time (a chunk divides a block: no read crosses one)
        blk, off = divmod(addr, _BS)
        part.readblocks(blk, mv, off)
        n = min(len(mv), size - addr)
        h.update(mv if n == len(mv) else mv[:n])
        addr += n
        if off == 0:
            gc.collect()  # what a block's reads left behind, before it piles up
    gc.collect()
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

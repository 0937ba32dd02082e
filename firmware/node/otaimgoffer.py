# The hub's offer of a firmware image (node/ota.offered; node/otaimage.py has the rest): every
# field checked, the board's own word that it takes images, and a next app slot that holds the
# image, before a byte is written. Loaded for the offer, then unloaded.
import binascii
import os

from micropython import const

from node.ota import report

_BS = const(4096)


def image_state(r):
    # A firmware image's download (node/otaimage.py) from its record: resumes at its last
    # whole 4 KB block; the slot (u["part"]) is opened by the first chunk.
    from node.ota import state

    u = state(r)
    for k in ("sha256", "label", "from", "pv", "blocks", "tries"):
        u[k] = r.get(k)
    u["img"] = 1
    u["part"] = None
    u["n"] = min(r["blocks"] * 4096 // u["chunk"], u["of"])
    return u


def _check(app, cmd):
    board = app.cfg["board"]
    if cmd.get("board") != board.get("name"):
        return "wrong board %r: this is %r" % (cmd.get("board"), board.get("name"))
    if not board.get("ota_image"):
        return "this board takes no firmware images (its board file has no ota_image)"
    v = cmd.get("v")
    if not isinstance(v, str) or not 0 < len(v) <= 32:
        return "bad offer: version"
    tag, size, chunk, digest = (cmd.get(k) for k in ("tag", "size", "chunk", "sha256"))
    if not isinstance(tag, str) or len(tag) != 8:
        return "bad offer: tag"
    try:
        binascii.unhexlify(tag)
        binascii.unhexlify(digest)
    except (TypeError, ValueError):
        return "bad offer: tag or sha256"
    if not isinstance(chunk, int) or not 256 <= chunk <= _BS or _BS % chunk:
        return "bad offer: chunk size"
    if not isinstance(size, int) or size <= 0 or len(digest) != 64:
        return "bad offer: size or sha256"
    return None


def offer(app, cmd):
    # The hub's image offer (node/ota.offered, not node/otaoffer.py: less code at once): app.ota
    # set for the download, or a refusal.
    u = app.ota
    if u is not None:
        if u["tag"] == cmd.get("tag"):
            u["at"] = None  # the same one: ask again now
        return  # another update first (a trial, a report, a download); offered again later
    u = {"v": cmd.get("v"), "tag": cmd.get("tag")}
    if u["v"] == app.fw:
        report(app, "updated", u)
        return
    error = _check(app, cmd)
    if error is None:
        try:
            import esp32  # ImportError: a build without it

            run = esp32.Partition(esp32.Partition.RUNNING)
            part = run.get_next_update()
            room = part.ioctl(4, 0) * part.ioctl(5, 0)
        except Exception as exc:  # no OTA partition table: ValueError or OSError
            error = "no OTA app slot: %r" % (exc,)
        else:
            if cmd["size"] > room:
                error = "image of %d bytes, the slot holds %d" % (cmd["size"], room)
    if error is not None:
        report(app, "failed", u, error)
        return
    try:
        os.mkdir("ota")
    except OSError:
        pass
    for k in ("size", "sha256", "chunk"):
        u[k] = cmd[k]
    u.update(st="dl", label=part.info()[4], blocks=0, tries=0, pv=app.fw)
    u["from"] = run.info()[4]
    del run, part
    # The record (as otaboot.write, without loading it: a new file renamed into place). A
    # download the boot did not resume starts again here.
    import json

    with open("ota/img.json.tmp", "w") as f:
        json.dump(u, f)
    try:
        os.remove("ota/img.json")
    except OSError:
        pass
    os.rename("ota/img.json.tmp", "ota/img.json")
    app.ota = image_state(u)



# The hub's offer of an app update ({"op": "ota", ...}, from node/app.py). Everything the hub
# sends is checked before a byte is written. Imported for the offer, then unloaded (node/ota.py
# keeps the download going).
import binascii
import json
import os
import sys

import node
from node.ota import OFFER, STAGE, drop_stage, report, state

_MAX_SIZE = 1048576


def _check(app, cmd):
    v = sys.implementation.version
    m = getattr(sys.implementation, "_mpy", 0)
    mp, mpy = "%d.%d.%d" % (v[0], v[1], v[2]), "%d.%d" % (m & 0xFF, m >> 8 & 3)
    board = app.cfg["board"].get("name")
    if cmd.get("board") != board:
        return "wrong board %r: this is %r" % (cmd.get("board"), board)
    if cmd.get("micropython") != mp or cmd.get("mpy") != mpy:
        return "wrong MicroPython %s/%s: this runs %s/%s" % (
            cmd.get("micropython"), cmd.get("mpy"), mp, mpy)
    tag, size, chunk, msize = (cmd.get(k) for k in ("tag", "size", "chunk", "msize"))
    if not isinstance(tag, str) or len(tag) != 8:
        return "bad offer: tag"
    try:
        binascii.unhexlify(tag)
    except ValueError:
        return "bad offer: tag"
    if not isinstance(chunk, int) or not 256 <= chunk <= 4096:
        return "bad offer: chunk size"
    if not isinstance(size, int) or not 0 < size <= _MAX_SIZE:
        return "bad offer: size"
    if not isinstance(msize, int) or not 0 < msize < size or msize > 16384:
        return "bad offer: manifest size"
    try:
        st = os.statvfs(".")
        if st[0] * st[4] < 2 * size + 8192:
            return "no room: %d bytes free" % (st[0] * st[4])
    except (AttributeError, OSError):
        pass
    return None


def handle(app, cmd):
    # An offer, {"op": "ota", ...} (App.handle_later): start or resume a download, or cancel one.
    u = app.ota
    tag = cmd.get("tag")
    if cmd.get("cancel"):
        if u is not None and u["mode"] == "download" and u["tag"] == tag:
            drop_stage()
            app.ota = None
            app.link.rx = None
        return
    if u is not None and u["mode"] != "download":
        return  # a trial or a report first; the hub offers again later
    v = cmd.get("v")
    if not isinstance(v, str) or not 0 < len(v) <= 32:
        return
    if v == node.VERSION:
        report(app, "updated", {"v": v, "tag": tag})
        return
    error = _check(app, cmd)
    if error is not None:
        report(app, "failed", {"v": v, "tag": tag}, error)
        return
    if u is not None and u["tag"] == tag:
        u["at"] = None  # ask again now
        return
    drop_stage()
    try:
        os.mkdir("ota")
    except OSError:
        pass
    u = state(cmd)
    with open(OFFER, "w") as f:
        json.dump({k: u[k] for k in ("v", "tag", "size", "chunk", "msize")}, f)
    with open(STAGE, "wb"):
        pass
    app.ota = u

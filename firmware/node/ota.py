# App updates over MQTT, the download: the hub offers a bundle (node/otaoffer.py checks it), then
# the device asks for one chunk at a time and writes it into ota/stage.bin at its place, so a
# download resumes by chunk index after a disconnect or a reboot and never holds more than one
# chunk. The download is the manifest ("path size sha256" lines, msize bytes), then the files.
# node/otainst.py checks and installs it at the next boot; node/otatrial.py keeps the new app or
# rolls it back.
# Reports go on d/<id>/r: {"ota": state, "v", "tag", "n", "of", "error"}, state one of
# downloading, verifying, installing, trial, updated, rolled_back, failed.
# app.ota: {"mode": "download"|"trial"|"report", "v", "tag", ...} while there is work; the
# modules are imported only then (and this one is kept small: it stays for the download).
import binascii
import gc
import json
import os
import struct
import time

from micropython import const

STAGE = "ota/stage.bin"
OFFER = "ota/stage.json"
_ASK_MS = const(5000)  # ask again for a chunk that has not come


def drop_stage():
    for path in (STAGE, OFFER):
        try:
            os.remove(path)
        except OSError:
            pass


def state(offer, mode="download"):
    u = {"mode": mode, "connects": -1, "at": None, "pid": 0}
    for k in ("v", "tag", "size", "chunk", "msize", "why"):
        u[k] = offer.get(k)
    if mode == "download":
        u["tagb"] = binascii.unhexlify(u["tag"])
        u["of"] = (u["size"] + u["chunk"] - 1) // u["chunk"]
        u["n"] = 0
    return u


def report(app, what, u, error=None, n=None):
    body = {"ota": what, "v": u["v"], "tag": u["tag"]}
    if error is not None:
        body["error"] = error
    if n is not None:
        body["n"] = n
        body["of"] = u["of"]
    if n == 0 or what == "failed":  # who it is, for the hub's own check before chunks go
        import sys

        v, m = sys.implementation.version, getattr(sys.implementation, "_mpy", 0)
        body["mp"] = "%d.%d.%d/%d.%d" % (v[0], v[1], v[2], m & 0xFF, m >> 8 & 3)
        body["board"] = app.cfg["board"].get("name", "?")
    print("ota:", what, u["v"], error or n)
    if not app.link.connected:
        return 0
    return app.link.publish(app.reply_topic, json.dumps(body).encode(), qos=1)


def on_chunk(app, msg):
    # 0x01 | tag (4 bytes) | n (4 bytes, big-endian) | data: written at n * chunk.
    u = app.ota
    if u is None or u["mode"] != "download" or len(msg) < 9 or bytes(msg[1:5]) != u["tagb"]:
        return
    n = struct.unpack_from(">I", msg, 5)[0]
    chunk = u["chunk"]
    if n != u["n"] or len(msg) - 9 != min(chunk, u["size"] - n * chunk):
        return  # a resend of an older chunk, or not the one asked for
    with open(STAGE, "r+b") as f:
        f.seek(n * chunk)
        f.write(msg[9:])
    u["n"] = n + 1
    u["at"] = None


def offered(app, cmd):
    # An offer, {"op": "ota", ...} (App.handle_later): node/otaoffer.py checks it.
    import node
    from node import otaoffer

    try:
        otaoffer.handle(app, cmd)
    finally:  # the download needs this module only
        node.drop("otaoffer")
    if app.ota is None:  # no download started: nothing of it need stay loaded
        node.drop("ota")


def step(app):
    # Called by the app loop while app.ota is set.
    u = app.ota
    if u is None:
        return
    if u["mode"] != "download":
        if u["mode"] == "trial" and app.up_ms > app.cfg["ota_trial_s"] * 1000:
            import otaboot

            otaboot.failed("no healthy report within %d s" % app.cfg["ota_trial_s"])
            app.reboot()
        if app.link.connected and (u["connects"] != app.connects or u["pid"]):
            import sys

            import node
            from node import otatrial

            otatrial.step(app, u)
            node.drop("otatrial")
            sys.modules.pop("otaboot", None)
            if app.ota is None:  # reported: none of it need stay loaded
                node.drop("ota")
        return
    if not app.link.connected:
        return
    if app.link.rx is None:
        # Chunks are read into one buffer (node/wire.py), made before the first is asked for,
        # after a collection, so no chunk needs a fresh kilobyte of heap.
        gc.collect()
        try:
            app.link.rx = bytearray(u["chunk"] + 9)
        except MemoryError:
            return  # the next loop tries again
    fresh = u["connects"] != app.connects
    u["connects"] = app.connects
    now = time.ticks_ms()
    if u["n"] >= u["of"]:  # complete: installed at the next boot (node/start.py, node/otainst.py)
        app.ota = None
        app.link.rx = None
        app.reboot_soon(report(app, "installing", u))
    elif fresh or u["at"] is None or time.ticks_diff(now, u["at"]) > _ASK_MS:
        report(app, "downloading", u, None, u["n"])
        u["at"] = now

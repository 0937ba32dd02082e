# Health: the retained d/<id>/m message, as JSON (a low-rate topic), refreshed every meta_s.
import gc
import json

from node import VERSION, hw, net


def payload(app):
    gc.collect()
    host, port = app.cfg["hubs"][app.hub_idx]  # sent while connected: the hub it is on
    return json.dumps({
        "fw": VERSION,
        "board": app.cfg["board"].get("name", "?"),
        "reset": hw.reset_cause(),
        "up": app.up_ms // 1000,
        "heap": gc.mem_free(),
        "rssi": net.rssi(),
        "reconnects": app.reconnects,
        "queue": len(app.ring),
        "dropped": app.ring.dropped,
        "boot": app.boot.decode(),
        "seq": app.seq,
        "error": app.last_error,
        "hub": ("[%s]:%d" if ":" in host else "%s:%d") % (host, port),  # IPv6 in brackets
    }).encode()

# What a boot finds left of an app update (node/ota.py): a download to resume, an app on trial, or
# a result to report (rolled back, refused). Imported once by node/start.py while it builds the
# app, then unloaded; node/ota.py is loaded only for a download.
import json
import os

import otaboot

_OFFER = "ota/stage.json"
_STAGE = "ota/stage.bin"


def start(app):
    # From node/start.py while it builds the app: app.ota, then this module and the pointer's
    # code go.
    import sys

    import node

    app.ota = resume(app)
    del sys.modules["node.otaresume"], node.otaresume
    sys.modules.pop("otaboot", None)  # needed again only at the end of an update


def resume(app):
    # The update's state, or None.
    p = otaboot.read()
    try:
        with open(_OFFER) as f:
            offer = json.load(f)
    except (OSError, ValueError):
        offer = None
    if offer is not None and offer.get("tag") == p.get("tag"):
        offer = None  # installed and switched; power went before the clean-up
    if offer is None:
        for path in (_STAGE, _OFFER):
            try:
                os.remove(path)
            except OSError:
                pass
    if p.get("trial") or p.get("result"):
        trial = bool(p.get("trial"))
        return {"mode": "trial" if trial else "report", "connects": -1, "pid": 0,
                "v": p.get("v") if trial else p.get("rv"), "tag": p.get("tag"),
                "result": p.get("result"), "why": p.get("why")}
    if offer is None:
        return None
    try:
        size = os.stat(_STAGE)[6]
    except OSError:
        size = 0
    app.link.rx = bytearray(offer["chunk"] + 9)  # before node/ota.py: its kilobyte in one piece
    from node.ota import state

    u = state(offer)
    u["n"] = min(size // u["chunk"], u["of"])
    return u

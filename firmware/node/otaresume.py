# What a boot finds left of an app update (node/ota.py): a download to resume, an app on trial, or
# a result to report (rolled back, refused). Imported once by node/start.py before it builds the
# app (the heap at its emptiest), then unloaded; node/ota.py is loaded only for a download.
import json
import os

import otaboot

_OFFER = "ota/stage.json"
_STAGE = "ota/stage.bin"


def resume():
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
    from node.ota import state  # loaded before the app: low in the heap, in one piece

    u = state(offer)
    u["n"] = min(size // u["chunk"], u["of"])
    return u

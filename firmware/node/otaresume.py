# What a boot finds left of an app update (node/ota.py): a download to resume, an app on trial,
# or a rollback to report. Imported once by node/app.py at start, then unloaded.
import json
import os

import otaboot
from node.ota import OFFER, STAGE, drop_stage, state


def resume():
    # The update's state, or None.
    p = otaboot.read()
    try:
        with open(OFFER) as f:
            offer = json.load(f)
    except (OSError, ValueError):
        offer = None
        drop_stage()
    if offer is not None and offer.get("tag") == p.get("tag"):
        drop_stage()  # installed and switched; power went before the clean-up
        offer = None
    if p.get("trial"):
        return state(p, "trial")
    if p.get("result"):
        u = state({"v": p.get("rv"), "tag": p.get("tag"), "why": p.get("why")}, "report")
        u["result"] = p["result"]
        return u
    if offer is None:
        return None
    try:
        size = os.stat(STAGE)[6]
    except OSError:
        size = 0
    u = state(offer)
    u["n"] = min(size // u["chunk"], u["of"])
    return u



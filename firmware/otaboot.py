# The app pointer for over-the-air updates (node/ota.py): which app folder boots, and the trial
# of a new one. Lives at the root beside boot.py and main.py and is never part of a bundle, so
# a broken app cannot break the way back to the previous one.
#
# app.json: {"dir": "a", "v": "1.2.0", "prev": "", "pv": "0.1.0", "trial": 1, "tag": "..."}
# "dir" is the folder under ota/ whose node package boots ("" or no app.json: the deployed
# firmware at the root). "trial" counts boots of a new app that has not yet reported healthy
# to the hub (0: kept). Every change is a new file renamed over the old one, so a power cut
# at any byte leaves the old pointer or the new one, each naming a complete folder.
import json
import os
import sys

POINTER = "app.json"
_TMP = "app.json.tmp"
TRIAL_BOOTS = 3  # boots a new app gets to report healthy before the previous one returns


def read():
    for path in (POINTER, _TMP):  # the tmp file alone: power lost between remove and rename
        try:
            with open(path) as f:
                p = json.load(f)
            if isinstance(p, dict) and isinstance(p.get("dir", ""), str):
                return p
        except (OSError, ValueError):
            pass
    return {}


def write(p):
    with open(_TMP, "w") as f:
        json.dump(p, f)
    try:
        os.rename(_TMP, POINTER)
    except OSError:  # FAT cannot rename over a file: remove it first (read() finds the tmp)
        os.remove(POINTER)
        os.rename(_TMP, POINTER)


def roll_back(p, why):
    # Back to the previous app; the result is reported once the old app reaches the hub.
    write({"dir": p.get("prev", ""), "v": p.get("pv"), "prev": "", "pv": None, "trial": 0,
           "result": "rolled_back", "rv": p.get("v"), "tag": p.get("tag"), "why": why})


def pick():
    # boot.py: count a trial boot (or roll back past TRIAL_BOOTS) and put the app on sys.path.
    p = read()
    if p.get("trial"):
        if p["trial"] >= TRIAL_BOOTS:
            roll_back(p, p.get("why") or "no healthy report after %d boots" % TRIAL_BOOTS)
            p = read()
        else:
            p["trial"] += 1
            write(p)
    d = p.get("dir")
    if d:
        sys.path.insert(0, "ota/" + d)  # relative: the board's root, or the unix port's folder
    return p


def failed(why):
    # main.py, when the app on trial raised: the next boot returns to the previous app.
    p = read()
    if p.get("trial"):
        p["trial"] = TRIAL_BOOTS
        p["why"] = why[:120]
        write(p)
        return True
    return False

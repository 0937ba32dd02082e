# What the ESP-IDF bootloader does at each reset with the fake esp32's otadata
# (tools/unixport/esp32.py), run by tools/unixport/run.py before boot.py: a slot set to boot
# ("new") starts pending verification; a pending slot reset before
# mark_app_valid_cancel_rollback() is aborted and the previous slot boots (rollback: ESP-IDF's
# CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, which MicroPython's OTA variant builds with).
import json
import os

OTADATA = "flash/otadata.json"


def bootloader():
    try:
        with open(OTADATA) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return  # never updated: the first slot boots
    if d["state"] == "new":
        d["state"] = "pending"
    elif d["state"] == "pending":  # reset before it was marked valid: roll back
        print("bootloader: %s was not marked valid: back to %s" % (d["boot"], d["prev"]))
        d["state"] = "aborted"
        d["boot"] = d["prev"]
    d["running"] = d["boot"]
    with open(OTADATA + ".tmp", "w") as f:
        json.dump(d, f)
    os.rename(OTADATA + ".tmp", OTADATA)

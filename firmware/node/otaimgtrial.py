# A firmware image update (node/otaimage.py) after a boot, and at the end of its trial: loaded
# by node/start.py before the app is built, and by node/otatrial.py once the hub has the
# trial's report; unloaded after each. The bootloader has already picked the slot: a slot set to
# boot starts pending verification, and one reset unmarked is rolled back.
import esp32

import otaboot
from node.ota import report

RECORD = otaboot.IMAGE


def at_boot():
    # node/start.py, before the app is built (the heap at its emptiest): (the update's state or
    # None, the version that runs or None for node.VERSION).
    r = otaboot.read(RECORD)
    st = r.get("st")
    if st is None:
        return None, None
    run = esp32.Partition(esp32.Partition.RUNNING).info()[4]
    label = r.get("label")
    if st == "ok":
        return None, r.get("v") if run == label else None
    if st == "dl":
        if run != r.get("from"):  # the slots changed under the download: start again
            _drop()
            return None, r.get("pv")
        from node.otaimgoffer import image_state  # its module is unloaded by node/start.py

        return image_state(r), r.get("pv")
    why = r.get("why")
    if st == "set":
        if run == label:  # the trial boot: from now on a reset is the bootloader's rollback
            r["st"] = "trial"
            otaboot.write(r, RECORD)
            st = "trial"
        elif not r.get("tries"):  # set_boot did not take (power went): once more
            r["tries"] = 1
            otaboot.write(r, RECORD)
            esp32.Partition(label).set_boot()
            from node import hw

            hw.reboot()
        else:
            st, why = "rb", "the new image did not start"
    elif st == "trial":
        if run == label:  # marked valid, and power went before the record said so
            esp32.Partition.mark_app_valid_cancel_rollback()
            otaboot.write({"st": "ok", "v": r["v"], "label": run}, RECORD)
            return _u("report", r, "updated", None), r["v"]
        st, why = "rb", why or "reset before a healthy report"
    if st == "trial":
        return _u("trial", r, None, None), r["v"]
    if r["st"] != "rb":
        r.update(st="rb", why=why)
        otaboot.write(r, RECORD)
    return _u("report", r, "rolled_back", why), r.get("pv")


def _u(mode, r, result, why):
    return {"mode": mode, "img": 1, "connects": -1, "pid": 0, "v": r.get("v"),
            "tag": r.get("tag"), "result": result, "why": why, "pv": r.get("pv")}


def settle(app, u):
    # node/otatrial.py, once the hub has the trial's report (or the rollback's): keep the image.
    run = esp32.Partition(esp32.Partition.RUNNING).info()[4]
    if u["mode"] == "trial":
        esp32.Partition.mark_app_valid_cancel_rollback()
        otaboot.write({"st": "ok", "v": u["v"], "label": run}, RECORD)
        report(app, "updated", u)
    elif u["result"] == "rolled_back":  # what runs again is what ran before the update
        if u.get("pv"):
            otaboot.write({"st": "ok", "v": u["pv"], "label": run}, RECORD)
        else:
            _drop()


def _drop():
    import os

    for path in (RECORD, RECORD + ".tmp"):
        try:
            os.remove(path)
        except OSError:
            pass

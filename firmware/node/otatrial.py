# A new app on trial (node/ota.py; loaded while connected only): kept once it has reached the hub
# and its "trial" report was acknowledged (after the connect's online and health), within
# ota_trial_s; otherwise back to the previous app (otaboot.py) with a reboot. Also reports a
# rollback, or an install that was refused, once the app is connected.
from node.ota import report


def step(app, u):
    # Connected: report the trial (or the result), and once the hub has it, keep the new app.
    if u["connects"] != app.connects:
        u["connects"] = app.connects
        if u["mode"] == "trial":
            u["pid"] = report(app, "trial", u)
        else:
            u["pid"] = report(app, u["result"], u, u["why"])
    elif u["pid"] and not app.link.pending(u["pid"]):  # the hub has it: reached and healthy
        import otaboot

        p = otaboot.read()
        if u["mode"] == "trial":
            p["trial"] = 0
        for k in ("result", "rv", "why"):
            p.pop(k, None)
        otaboot.write(p)
        if u["mode"] == "trial":
            report(app, "updated", u)
        app.ota = None
    elif u["pid"] == 0:  # not sent: the link went; again on the next connect
        u["connects"] = -1

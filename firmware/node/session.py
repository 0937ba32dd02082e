# Connecting and reconnecting, for node/app.py's App: Wi-Fi, the link, the command subscription
# (again on every connect: clean sessions), a retained `online`, the outcome of a settings
# trial and health; a failed link waits with exponential backoff and jitter, and an untried
# settings update that never connects is rolled back. Functions of the app, like commands and
# health: the state they keep (backoff, counts, last error) is the app's, for health to report.
#
# Failover: the settings' `hubs` are tried in turn. A failed connect or a lost link moves to the
# next address; a device stays on the hub it has (no going back to the first) until it loses it.
# Backoff: each failed attempt waits between half and all of the current step, and the step
# doubles (backoff_min_ms up to backoff_max_ms) after each full round of addresses that all
# failed, so one dead address does not slow the move to the next. A working session (connected,
# subscribed, online published) that is lost retries soon, at a uniformly random moment within
# 0 to _SPREAD x backoff_min_ms (0 to 2 s by default), and the step starts again at
# backoff_min_ms: a hub restart drops a whole fleet at the same instant, and the fleet must come
# back spread over that window (not in lock-step, not all after the same step) without the
# first attempt, often made while the hub is still starting, doubling the waits after it. A
# link lost before its session worked (admitted, then its subscription refused) waits 0 to all
# of the step and doubles it, so such a hub is not hammered. tools/bench/fleetgen.py's devices
# do the same (Device.run).
import random
import time

from micropython import const
from umqtt.simple import MQTTException

from node import net

_TRIAL_ATTEMPTS = const(3)  # failed connects before an untried settings update rolls back
_SPREAD = const(2)  # a lost working session retries within 0 to this x backoff_min_ms
DEBUG = True


def log(msg):
    if DEBUG:
        print(msg)


def connect(app):
    cfg = app.cfg
    host, port = cfg["hubs"][app.hub_idx]
    if not net.up(cfg["wifi_ssid"], cfg["wifi_password"]):
        raise OSError("wifi down")
    app.link.target(host, port)
    app.link.connect()
    app.link.subscribe(app.command_topic, 1)  # again on every connect: clean sessions
    app.link.publish(app.status_topic, b"online", retain=True, qos=1)
    app.backoff_ms = 0  # a working session: its loss retries within the spread window
    app.failures = 0
    app.connects += 1
    if app.connects > 1:
        app.reconnects += 1
    log("connected to %s:%d as %s (boot %s)" % (host, port, cfg["id"], app.boot.decode()))
    if app.trial is not None:
        _finish_trial(app)
    app.publish_meta()


def link_failed(app, exc):
    was_connected = app.link.connected
    app.link.close()
    app.last_error = repr(exc)
    cfg = app.cfg
    hubs = cfg["hubs"]
    host, port = hubs[app.hub_idx]
    app.hub_idx = (app.hub_idx + 1) % len(hubs)  # failed or lost: the next address
    step = app.backoff_ms
    worked = not step  # since the last working session, nothing failed
    if worked:
        step = app.backoff_ms = cfg["backoff_min_ms"]
    if was_connected and worked:  # a working session lost: soon, spread over the window
        delay = random.getrandbits(24) % (_SPREAD * step + 1)
        grow = False  # the next failed attempt waits half to all of backoff_min_ms
    elif was_connected:  # admitted, then its subscription refused: 0 to all of the step
        delay = random.getrandbits(24) % (step + 1)
        grow = True
    else:  # half to all of the step, which grows after each full round of addresses
        app.failures += 1
        delay = step // 2 + random.getrandbits(24) % (step // 2 + 1)
        grow = app.failures % len(hubs) == 0
    if grow:
        app.backoff_ms = min(step * 2, cfg["backoff_max_ms"])
    nxt = hubs[app.hub_idx]
    log("link down (%r), retry in %d ms; was %s:%d, next %s:%d"
        % (exc, delay, host, port, nxt[0], nxt[1]))
    app.retry_at = time.ticks_add(time.ticks_ms(), delay)
    if not was_connected and isinstance(exc, MQTTException):
        # The hub refused the CONNECT (a refused subscription comes once the link is up):
        # 3 server unavailable, 4 bad user name or password, 5 not authorised. A stable line
        # for tools/deploy.py.
        log("link: refused %d" % exc.args[0])
    trial = app.trial
    if (trial is not None and trial["state"] == "trying"
            and app.failures >= max(_TRIAL_ATTEMPTS, len(hubs))):
        from node import trial as settings_trial

        settings_trial.roll_back("rolled back: no connection with the new settings (%s)"
                                 % app.last_error)
        app.reboot()


def _finish_trial(app):
    import node
    from node.trial import end_trial

    trial = app.trial
    app.trial = None
    if trial["state"] == "trying":
        app.reply(trial["id"], True, applied=True)
    else:
        app.reply(trial["id"], False, error=trial.get("error", "rolled back"))
    end_trial()
    node.drop("trial", "config")  # loaded for the trial only

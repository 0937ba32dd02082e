# Connecting and reconnecting, for node/app.py's App: Wi-Fi, the link, the command subscription
# (again on every connect: clean sessions), a retained `online`, the outcome of a settings
# trial and health; a failed link waits with exponential backoff and jitter, and an untried
# settings update that never connects is rolled back. Functions of the app, like commands and
# health: the state they keep (backoff, counts, last error) is the app's, for health to report.
import random
import time

from micropython import const
from umqtt.simple import MQTTException

from node import net

_TRIAL_ATTEMPTS = const(3)  # failed connects before an untried settings update rolls back
DEBUG = True


def log(msg):
    if DEBUG:
        print(msg)


def connect(app):
    cfg = app.cfg
    if not net.up(cfg["wifi_ssid"], cfg["wifi_password"]):
        raise OSError("wifi down")
    app.link.connect()
    app.link.subscribe(app.command_topic, 1)  # again on every connect: clean sessions
    app.link.publish(app.status_topic, b"online", retain=True, qos=1)
    app.backoff_ms = cfg["backoff_min_ms"]
    app.failures = 0
    app.connects += 1
    if app.connects > 1:
        app.reconnects += 1
    log("connected to %s:%d as %s (boot %s)" % (cfg["hub_host"], cfg["hub_port"], cfg["id"],
                                                app.boot.decode()))
    if app.trial is not None:
        _finish_trial(app)
    app.publish_meta()


def link_failed(app, exc):
    was_connected = app.link.connected
    app.link.close()
    app.last_error = repr(exc)
    if not was_connected:
        app.failures += 1
    # Exponential backoff with jitter: wait between half and all of the current step.
    half = app.backoff_ms // 2
    delay = half + random.getrandbits(20) % (half + 1)
    app.retry_at = time.ticks_add(time.ticks_ms(), delay)
    app.backoff_ms = min(app.backoff_ms * 2, app.cfg["backoff_max_ms"])
    log("link down (%r), retry in %d ms" % (exc, delay))
    if not was_connected and isinstance(exc, MQTTException):
        # The hub refused the CONNECT (a refused subscription comes once the link is up):
        # 4 bad user name or password, 5 not authorised. A stable line for tools/deploy.py.
        log("link: refused %d" % exc.args[0])
    trial = app.trial
    if trial is not None and trial["state"] == "trying" and app.failures >= _TRIAL_ATTEMPTS:
        from node import trial as settings_trial

        settings_trial.roll_back("rolled back: no connection with the new settings (%s)"
                                 % app.last_error)
        app.reboot()


def _finish_trial(app):
    from node.trial import end_trial

    trial = app.trial
    app.trial = None
    if trial["state"] == "trying":
        app.reply(trial["id"], True, applied=True)
    else:
        app.reply(trial["id"], False, error=trial.get("error", "rolled back"))
    end_trial()

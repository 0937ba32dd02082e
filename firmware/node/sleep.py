# Deep-sleep mode (board setting deep_sleep_s): wake, read, publish or queue, sleep.
# Each wake is a reset, so this runs once per boot and ends in hw.deep_sleep().
# Updates (node/ota.py): the hub offers an update when a device comes online, so each wake
# listens a moment for an offer after its readings are sent. While an update is under way (a
# download, its trial, a report) the device stays awake, up to the board's update_awake_s; a
# download cut short by that resumes by chunk index on the next wake. A trial must settle in
# the wake it boots in: one that did not reach the hub is failed before the device sleeps (a
# deep-sleep wake is a reset, and the bootloader rolls back an image that is not marked valid).
import gc
import time

from micropython import const

from node import hw, session

_AWAKE_MAX_MS = const(20000)  # the radio is the battery's biggest cost: bounded time awake
_LISTEN_MS = const(1500)  # awake at least this long once connected: an update offer, a desired delta
_UPDATE_AWAKE_S = const(120)  # default of the board's update_awake_s
_STEP_MS = const(20)


def _connect(app):
    # Each hub address once per wake, in order (no backoff: the next wake is the retry).
    for _ in app.cfg["hubs"]:
        try:
            session.connect(app)
            return True
        except Exception as exc:  # this address failed: the readings wait, try the next
            session.link_failed(app, exc)
    return False


def _serve(app, start):
    # Connected: send the ring, take an offer, and see an update through, within the bounds.
    link = app.link
    update_ms = app.cfg["board"].get("update_awake_s", _UPDATE_AWAKE_S) * 1000
    since = time.ticks_ms()
    while link.connected:
        now = time.ticks_ms()
        app.up_ms = time.ticks_diff(now, start)  # the trial's clock (node/ota.step)
        if app.ota is not None or app.later is not None or app.reboot_at is not None:
            if app.up_ms >= update_ms:
                return
        elif len(app.ring):
            if app.up_ms >= _AWAKE_MAX_MS:
                return
        elif time.ticks_diff(now, since) >= _LISTEN_MS:
            return
        app.send_queued()
        link.service()
        app.collect_acks()
        if app.later is not None:
            app.handle_later()
        if app.ota is not None:
            from node import ota

            ota.step(app)
        if app.reboot_at is not None and (
                not link.pending(app.reboot_pid) or time.ticks_diff(now, app.reboot_at) >= 0):
            app.reboot()  # an update to install, a settings trial: the next boot goes on
        app.wdt.feed()
        gc.collect()  # once per pass, as the app loop does: an update's code needs the room
        time.sleep_ms(_STEP_MS)


def cycle(app):
    start = time.ticks_ms()
    app.read_now()
    app.read_due(start)  # the readings go to the flash ring first, as always
    link = app.link
    gc.collect()  # what reading left: a settings trial's end (node/trial) loads at connect
    try:
        if _connect(app):
            _serve(app, start)
            if app.reboot_at is not None:  # an update to install (or settings): now, not later
                app.reboot()
            link.publish(app.status_topic, b"asleep", retain=True, qos=1)
            link.disconnect()  # a clean DISCONNECT: no "offline" will for a planned sleep
        elif app.trial is not None:  # a settings trial that reached no hub (node/trialwake)
            from node import trialwake

            trialwake.failed(app)
    except Exception as exc:  # no hub this time: the readings wait in the ring
        session.link_failed(app, exc)
    u = app.ota
    if u is not None and u["mode"] == "trial":  # not settled in its wake: back to the old one
        try:
            import otaboot

            otaboot.failed("asleep before a healthy report")
        except Exception:  # no room to say why: the trial's boot count (or bootloader) decides
            pass
    app.ring.close()
    awake = time.ticks_diff(time.ticks_ms(), start)
    hw.deep_sleep(max(app.cfg["board"]["deep_sleep_s"] * 1000 - awake, 1000))

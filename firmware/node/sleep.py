# Deep-sleep mode (board setting deep_sleep_s): wake, read, publish or queue, sleep.
# Each wake is a reset, so this runs once per boot and ends in hw.deep_sleep().
import gc
import time

from micropython import const

from node import hw, session

_AWAKE_MAX_MS = const(20000)  # the radio is the battery's biggest cost: bounded time awake
_STEP_MS = const(20)
_LISTEN_MS = const(500)  # from the connect: the hub answers `online` with a desired delta


def _connect(app):
    # Each hub address once per wake, in order (no backoff: the next wake is the retry).
    for _ in app.cfg["hubs"]:
        try:
            session.connect(app)
            return True
        except Exception as exc:  # this address failed: the readings wait, try the next
            session.link_failed(app, exc)
    return False


def cycle(app):
    start = time.ticks_ms()
    app.read_now()
    app.read_due(start)  # the readings go to the flash ring first, as always
    link = app.link
    gc.collect()  # what reading left: a settings trial's end (node/trial) loads at connect
    try:
        if _connect(app):
            until = time.ticks_add(time.ticks_ms(), _LISTEN_MS)
            # Send what is queued (older wakes' readings too) until acknowledged or out of time,
            # and listen until _LISTEN_MS after the connect for a settings command.
            while time.ticks_diff(time.ticks_ms(), start) < _AWAKE_MAX_MS and (len(app.ring) or (
                    app.later is None and time.ticks_diff(until, time.ticks_ms()) > 0)):
                app.send_queued()
                link.service()
                app.collect_acks()
                app.wdt.feed()
                time.sleep_ms(_STEP_MS)
            msg = app.later  # a settings trial starts; the next wake runs it and answers
            if msg is not None and b'"ota"' not in msg:  # update offers wait
                app.handle_later()
            link.publish(app.status_topic, b"asleep", retain=True, qos=1)
            link.disconnect()  # a clean DISCONNECT: no "offline" will for a planned sleep
        elif app.trial is not None:  # a settings trial that reached no hub (node/trialwake)
            from node import trialwake

            trialwake.failed(app)
    except Exception as exc:  # no hub this time: the readings wait in the ring
        session.link_failed(app, exc)
    app.ring.close()
    awake = time.ticks_diff(time.ticks_ms(), start)
    hw.deep_sleep(max(app.cfg["board"]["deep_sleep_s"] * 1000 - awake, 1000))

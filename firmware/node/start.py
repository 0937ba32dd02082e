# What runs once per boot, then is unloaded (its code need not stay in a 64 KB heap): the
# safe-mode pin, a downloaded app update to install (node/otainst.py), the settings, and the
# app's long-lived objects, built in one go after a collection so few holes sit between them.
import gc
import os
import time

import node
from node import hw

QUEUE_FILE = "queue.bin"
DEFAULT_SENSORS = [{"kind": "sim", "name": "temp", "decimals": 1}]


def boot():
    # From main.py: the App, ready to run, or None in safe mode. A complete download is
    # installed first, before the app takes the heap, and reboots into the new app.
    if hw.safe_mode():
        print("safe mode: app not started")
        return None
    time.sleep_ms(hw.START_DELAY_MS)  # a window for Ctrl-C before the app takes over
    try:
        os.stat("ota/stage.json")
    except OSError:
        pass  # no update downloaded
    else:
        _install()
    cfg = _settings()
    gc.collect()
    from node.app import App

    return App(cfg)


# Each module used once is a local of a function that returns before the app is built, so
# nothing holds it once it is dropped.
def _install():
    import sys

    from node import otainst

    otainst.at_boot()  # reboots into the new app, unless it is refused or incomplete
    node.drop("otainst", "ota")
    sys.modules.pop("otaboot", None)


def _settings():
    from node import config  # read and checked, then its code goes

    cfg = config.load()
    node.drop("config")
    return cfg


def build(app, cfg):
    # App.__init__: every attribute the app has, set here (a dict that grows while the heap
    # fills leaves holes); topics and payload formats built once, the loop only fills them in.
    from node import sensors
    from node.link import Link
    from node.ring import Ring

    gc.collect()
    now = time.ticks_ms()
    app.cfg = cfg
    app.trial = cfg.pop("trial", None)  # a settings update on trial (node/config.load)
    app.seq = 0
    app.period_ms = cfg["period_s"] * 1000
    app.backoff_ms = cfg["backoff_min_ms"]
    app.hub_idx = 0  # the address in cfg["hubs"] the next connect goes to
    app.retry_at = app._tick = app.meta_at = now
    app.reconnects = app.connects = 0
    app.failures = 0  # connect attempts failed in a row
    app.last_error = None
    app.up_ms = 0
    app.reboot_pid = 0  # reboot once this reply is acknowledged (or at reboot_at)
    app.reboot_at = None
    app.ota = None  # an app update (node/ota.py)
    app.later = None  # an update offer or settings, handled by the next step (App.handle_later)
    app.window = []  # [ring index, packet id] of readings in flight, oldest first
    app.topics = []
    app.formats = []
    app.periods = []  # per sensor, ms; 0 = the device period (the "period" command)
    app.channel0 = []  # per sensor, the index of its first channel
    app.outputs = {}
    device = cfg["id"]
    board = cfg["board"]
    pins = board.get("pins", {})
    prefix = "d/" + device
    app.status_topic = (prefix + "/s").encode()
    app.command_topic = (prefix + "/c").encode()
    app.reply_topic = (prefix + "/r").encode()
    app.meta_topic = (prefix + "/m").encode()
    specs = board.get("sensors", DEFAULT_SENSORS)
    app.sensors = [sensors.make(s, device, pins) for s in specs]
    node.drop("sensors")  # the adapters stay (their objects use them), the factory goes
    for s, spec in zip(app.sensors, specs):
        app.channel0.append(len(app.topics))
        for name, decimals in zip(s.names, s.decimals):
            app.topics.append((prefix + "/t/" + name).encode())
            app.formats.append(b"%%s,%%d,%%.%df" % decimals)
        app.periods.append(spec.get("period_s", 0) * 1000)
    for name in board.get("outputs", ()):
        app.outputs[name] = hw.Output(pins[name])
    app.boot = hw.boot_id()
    app.next_read = [now] * len(app.sensors)
    app.wdt = hw.Watchdog(board.get("watchdog_ms", 0))
    app.ring = Ring(QUEUE_FILE, cfg["queue_len"])
    app.send_idx = app.ring.first
    ssl_context = None
    if cfg["tls"]:
        from node import tlsctx  # lazily: most boot paths never pay for TLS

        ssl_context = tlsctx.client_context()
        node.drop("tlsctx")
    host, port = cfg["hubs"][0]
    link = Link(device, host, port, cfg["username"], cfg["password"], cfg["keepalive_s"],
                cfg["io_timeout_s"], cfg["ack_timeout_s"], ssl_context)
    link.set_last_will(app.status_topic, b"offline", retain=True, qos=1)
    link.set_callback(app.on_message)
    app.link = link
    try:
        os.stat("ota")  # never updated over the air: nothing to load
    except OSError:
        return
    from node import otaresume

    otaresume.start(app)

# The device loop: read -> publish -> check messages -> ping -> feed the watchdog -> gc.
import gc
import json
import random
import time

from micropython import const

from node import VERSION, config, hw, net, sensors
from node.link import Link

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_LOOP_SLEEP_MS = const(50)
DEBUG = True

DEFAULT_SENSORS = [{"kind": "sim", "name": "temp", "decimals": 1}]


def log(msg):
    if DEBUG:
        print(msg)


class App:
    def __init__(self, cfg):
        self.cfg = cfg
        device = cfg["id"]
        board = cfg["board"]
        prefix = "d/" + device
        # Topics and payload formats are built once; the loop only fills them in.
        self.status_topic = (prefix + "/s").encode()
        self.command_topic = (prefix + "/c").encode()
        self.reply_topic = (prefix + "/r").encode()
        self.sensors = [sensors.make(spec, device) for spec in board.get("sensors", DEFAULT_SENSORS)]
        self.topics = [(prefix + "/t/" + s.name).encode() for s in self.sensors]
        self.formats = [b"%%s,%%d,%%.%df" % s.decimals for s in self.sensors]
        self.boot = hw.boot_id()
        self.seq = 0
        self.period_ms = cfg["period_s"] * 1000
        self.next_read = time.ticks_ms()
        self.wdt = hw.Watchdog(board.get("watchdog_ms", 0))
        self.link = Link(device, cfg["hub_host"], cfg["hub_port"], cfg["username"],
                         cfg["password"], cfg["keepalive_s"], cfg["io_timeout_s"])
        self.link.set_last_will(self.status_topic, b"offline", retain=True, qos=1)
        self.link.set_callback(self.on_message)
        self.backoff_ms = _BACKOFF_MIN_MS
        self.retry_at = time.ticks_ms()
        self.reconnects = 0

    # --- link --------------------------------------------------------------------------
    def connect(self):
        cfg = self.cfg
        if not net.up(cfg["wifi_ssid"], cfg["wifi_password"]):
            raise OSError("wifi down")
        self.link.connect()
        self.link.subscribe(self.command_topic, 1)
        self.link.publish(self.status_topic, b"online", retain=True, qos=1)
        self.backoff_ms = _BACKOFF_MIN_MS
        log("connected to %s:%d as %s (boot %s)" % (cfg["hub_host"], cfg["hub_port"], cfg["id"],
                                                    self.boot.decode()))

    def link_failed(self, exc):
        self.link.close()
        self.reconnects += 1
        # Exponential backoff with jitter: wait between half and all of the current step.
        half = self.backoff_ms // 2
        delay = half + random.getrandbits(20) % (half + 1)
        self.retry_at = time.ticks_add(time.ticks_ms(), delay)
        self.backoff_ms = min(self.backoff_ms * 2, _BACKOFF_MAX_MS)
        log("link down (%r), retry in %d ms" % (exc, delay))

    # --- readings ----------------------------------------------------------------------
    def take_reading(self, i):
        # One formatting call per reading, with the sensor's fixed decimals (never str(float)).
        payload = self.formats[i] % (self.boot, self.seq, self.sensors[i].read())
        self.seq += 1
        return payload

    def read_and_publish(self):
        for i in range(len(self.sensors)):
            payload = self.take_reading(i)
            if self.link.can_publish():
                self.link.publish(self.topics[i], payload, qos=1)

    # --- commands ----------------------------------------------------------------------
    def on_message(self, topic, msg):
        if topic == self.command_topic:
            self.handle_command(msg)

    def reply(self, command_id, ok, **fields):
        fields["id"] = command_id
        fields["ok"] = ok
        self.link.publish(self.reply_topic, json.dumps(fields).encode(), qos=1)

    def handle_command(self, msg):
        try:
            cmd = json.loads(msg)
            command_id = cmd["id"]
            op = cmd["op"]
        except (ValueError, KeyError, TypeError):
            self.reply(None, False, error="a command is JSON with 'id' and 'op'")
            return
        if op == "ping":
            self.reply(command_id, True, version=VERSION)
        elif op == "read":
            self.next_read = time.ticks_ms()
            self.reply(command_id, True)
        elif op == "period":
            seconds = cmd.get("s")
            if not isinstance(seconds, int) or not 1 <= seconds <= 86400:
                self.reply(command_id, False, error="'s' must be whole seconds from 1 to 86400")
                return
            self.period_ms = seconds * 1000
            self.reply(command_id, True)
        else:
            self.reply(command_id, False, error="unknown op %r" % op)

    # --- loop --------------------------------------------------------------------------
    def step(self):
        now = time.ticks_ms()
        if not self.link.connected and time.ticks_diff(now, self.retry_at) >= 0:
            self.connect()
        if time.ticks_diff(now, self.next_read) >= 0:
            self.read_and_publish()
            self.next_read = time.ticks_add(self.next_read, self.period_ms)
            if time.ticks_diff(self.next_read, now) < 0:  # fell behind: do not burst to catch up
                self.next_read = time.ticks_add(now, self.period_ms)
        if self.link.connected:
            self.link.service()

    def run(self):
        while True:
            try:
                self.step()
            except Exception as exc:  # OSError, MQTTException (refused): back off, never crash
                self.link_failed(exc)
            self.wdt.feed()
            gc.collect()
            time.sleep_ms(_LOOP_SLEEP_MS)


def main():
    App(config.load()).run()

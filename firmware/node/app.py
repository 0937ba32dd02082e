# The device loop: read -> queue -> send -> check messages -> ping -> health -> feed WDT -> gc.
# Every reading goes through the flash ring (node/ring.py) and leaves it on its PUBACK.
# Connecting, and reconnecting with backoff, is node/session.py.
import gc
import json
import time

from micropython import const

import node
from node import hw, session

_LOOP_SLEEP_MS = const(50)
_WINDOW = const(12)  # readings in flight at once (replies, status and health go on top)
_SEND_PER_STEP = const(8)
_ANSWERS = const(5)  # replies kept, to answer a command sent again without running it
_ANSWER_BYTES = const(160)  # a longer reply (an error quoting its input) is not kept


class App:
    # Its attributes are all set by node/start.build, once per boot; the replies kept
    # (answered) come back from flash after a reboot (node/commands.py).
    def __init__(self, cfg):
        from node import start

        start.build(self, cfg)
        node.drop("start")
        from node import commands

        self.answered = commands.saved()[-_ANSWERS:]  # [[id, reply], ...], newest last
        node.drop("commands")

    # --- reboots -----------------------------------------------------------------------
    def reboot(self):
        if self.answered:  # a command sent again after the reboot is answered, not run
            from node import commands

            try:
                commands.save(self.answered)
            except Exception:  # a full flash, no heap left: the reboot goes on regardless
                pass
        self.ring.close()
        self.link.close()
        hw.reboot()

    def reboot_soon(self, pid, within_ms=2000):
        self.reboot_pid = pid
        self.reboot_at = time.ticks_add(time.ticks_ms(), within_ms)

    # --- readings ----------------------------------------------------------------------
    def take_readings(self, i):
        # One formatting call per value, with the channel's fixed decimals (never str(float)).
        ch = self.channel0[i]
        try:
            for value in self.sensors[i].read():
                self.ring.push(ch, self.formats[ch] % (self.boot, self.seq, value))
                self.seq += 1
                ch += 1
        except (OSError, ValueError) as exc:  # a sensor that does not answer; a full flash
            self.last_error = "sensor %d: %r" % (i, exc)

    def read_due(self, now):
        for i in range(len(self.sensors)):
            if time.ticks_diff(now, self.next_read[i]) >= 0:
                self.take_readings(i)
                period = self.periods[i] or self.period_ms
                nxt = time.ticks_add(self.next_read[i], period)
                if time.ticks_diff(nxt, now) < 0:  # fell behind: do not burst to catch up
                    nxt = time.ticks_add(now, period)
                self.next_read[i] = nxt

    def read_now(self):
        now = time.ticks_ms()
        for i in range(len(self.sensors)):
            self.next_read[i] = now

    def send_queued(self):
        # Oldest first, a bounded number per step, while the window has room.
        ring, link = self.ring, self.link
        if self.send_idx < ring.first:
            self.send_idx = ring.first  # the ring overwrote readings we had not sent yet
        for _ in range(_SEND_PER_STEP):
            if len(self.window) >= _WINDOW or self.send_idx >= ring.next or not link.connected:
                return
            item = ring.get(self.send_idx)
            if item is not None:
                pid = link.publish(self.topics[item[0]], item[1], qos=1)
                self.window.append([self.send_idx, pid])
            self.send_idx += 1

    def collect_acks(self):
        window = self.window
        while window and not self.link.pending(window[0][1]):
            self.ring.ack(window.pop(0)[0])

    # --- commands and health -----------------------------------------------------------
    def on_message(self, topic, msg):
        if topic == self.command_topic:
            if msg and msg[0] == 1:  # a chunk of an app update: bytes, not JSON
                from node import ota

                ota.on_chunk(self, msg)
            elif b'"ota"' in msg or b'"settings"' in msg:
                # An update offer or settings (or a command that mentions them): see handle_later.
                if self.later is not None:
                    self.handle_later()  # two in one read (rare): the first one now
                self.later = msg
            else:
                from node import commands

                commands.handle(self, msg)
                node.drop("commands")

    def handle_later(self):
        # An update offer or a settings update load the code that checks them (several KB):
        # here, outside the packet's receive path and after a collection, the heap is at its
        # emptiest. None of that code stays loaded after (a settings trial reboots anyway).
        msg = self.later
        self.later = None
        gc.collect()
        try:
            cmd = json.loads(msg)
        except ValueError:
            cmd = None
        op = cmd.get("op") if isinstance(cmd, dict) else None
        if op == "ota":
            from node import ota

            ota.offered(self, cmd)
        elif op == "settings" and "id" in cmd:
            if self.answer_again(cmd["id"]):
                return
            from node import trial

            trial.handle(self, cmd)
            node.drop("trial", "config")
        else:  # another command after all, or a malformed one: its own error
            from node import commands

            commands.handle(self, msg)
            node.drop("commands")

    def reply(self, command_id, ok, **fields):
        fields["id"] = command_id
        fields["ok"] = ok
        msg = json.dumps(fields)
        if command_id and len(msg) <= _ANSWER_BYTES:  # id 0: no id (a fixed payload)
            kept = self.answered
            kept.append([command_id, msg])
            if len(kept) > _ANSWERS:
                kept.pop(0)
        return self.link.publish(self.reply_topic, msg.encode(), qos=1)

    def answer_again(self, command_id):
        # A command whose id was answered (the hub sends one again when the reply may have
        # been lost) gets the same reply again and does not run twice. Id 0 (or none) is no id:
        # fixed payloads such as Home Assistant's switch commands reuse it, and each runs.
        if not command_id:
            return False
        for kept_id, msg in self.answered:
            if kept_id == command_id:
                self.link.publish(self.reply_topic, msg.encode(), qos=1)
                return True
        return False

    def publish_meta(self):
        from node import health

        self.link.publish(self.meta_topic, health.payload(self), retain=True, qos=1)
        self.meta_at = time.ticks_add(time.ticks_ms(), self.cfg["meta_s"] * 1000)

    # --- loop --------------------------------------------------------------------------
    def step(self):
        now = time.ticks_ms()
        self.up_ms += time.ticks_diff(now, self._tick)
        self._tick = now
        self.read_due(now)
        link = self.link
        if not link.connected and time.ticks_diff(now, self.retry_at) >= 0:
            session.connect(self)
        if link.connected:
            self.send_queued()
            link.service()
            self.collect_acks()
            if time.ticks_diff(now, self.meta_at) >= 0:
                self.publish_meta()
        if self.later is not None:
            self.handle_later()
        u = self.ota  # an update on trial runs its clock; the rest waits for the hub
        if u is not None and (link.connected or u["mode"] == "trial"):
            from node import ota

            ota.step(self)
        self.ring.sync()
        if self.reboot_at is not None and (
                not link.pending(self.reboot_pid) or time.ticks_diff(now, self.reboot_at) >= 0):
            self.reboot()

    def run(self):
        if self.cfg["board"].get("deep_sleep_s"):
            from node import sleep

            sleep.cycle(self)  # never returns: the board sleeps and wakes through a reset
        while True:
            try:
                self.step()
            except Exception as exc:  # OSError, MQTTException (refused): back off, never crash
                session.link_failed(self, exc)
            self.wdt.feed()
            gc.collect()
            time.sleep_ms(_LOOP_SLEEP_MS)

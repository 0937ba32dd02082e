"""`python -m tools.bench.fleetgen`: one worker of the multi-process fleet load generator.

A process may open at most 20,000 files here (a hard limit), so a fleet of 19,000 devices and
more is spread over several of these workers (tools/bench/storm.py starts them), each with its
own source address in 127.0.0.0/8. A worker reads its spec (a JSON line) on stdin, then
commands, one JSON line each, and answers each with one JSON line:

- ``connect``: every device connects (CONNECT, SUBSCRIBE to its command topic at QoS 1), at
  most ``concurrency`` at a time -> ``{"mark": "connected", "seconds": ...}``.
- ``publish``: each device takes a QoS 1 reading every ``period`` (random phases) and sends it
  while online; until its PUBACK it stays queued, as in the firmware's flash ring, and goes
  again (DUP) after a reconnect. No answer.
- ``watch`` (``since``: when the broker was killed; ``limit``: seconds): answers once every
  device has connected again after ``since`` and the readings it had taken when the command
  came are acknowledged, or at the limit with how far it got -> ``{"mark": "recovered",
  "online_at": ..., "backlog_at": ..., "backlog": ..., "back": ..., "drained": ...}``.
- ``stop``: publishing stops, the queues drain (bounded wait) -> ``{"result": ...}``.

Devices back off as firmware/node/session.py's ``link_failed`` does (Device.run mirrors it
line by line): a working session (subscribed) that is lost retries within 0 to ``SPREAD`` x
``backoff_min`` and the step starts again at ``backoff_min``; a failed connect (refused, reset,
no CONNACK within ``io_timeout``, CONNACK 3) waits half to all of the step, a link admitted and
then refused its subscription 0 to all of it, and both double the step up to ``backoff_max``.
They never give up, and ping when idle for half their keepalive. Each failed attempt is
counted by cause (``causes``), and ``watch`` says when each device was back. The fleet's
first connects (before any measurement) wait up to ``setup_timeout`` per step instead. Every
time is ``time.monotonic()``, which all processes share. The optional browser (MQTT over
WebSocket on ``d/+/t/+``) times each reading from device to browser: a reading's value is the
time it was sent (monotonic seconds modulo 10^6).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import struct
import sys
import time
from typing import Any

from tools.bench.mqtt import WsClient, connect_packet, publish_packet, subscribe_packet

Spec = dict[str, Any]
_U16 = struct.Struct("!H")
CLOCK_WRAP = 1_000_000.0  # a reading's value: the send time modulo this, in seconds
LAG_PROBE_S = 0.01
PING_EVERY_S = 0.25
SPREAD = 2  # firmware/node/session.py _SPREAD: a lost working session's window, x backoff_min


def _lag_summary(lags: list[float]) -> dict[str, float] | None:
    if not lags:
        return None
    ordered = sorted(lags)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Device(asyncio.Protocol):
    """One simulated device: its connection, its queue of unacknowledged readings."""

    def __init__(self, ident: str, secret: str | None, fleet: Fleet) -> None:
        self.ident = ident
        self.secret = secret
        self.fleet = fleet
        self.topic = f"d/{ident}/t/temp".encode()
        self.boot = f"{random.getrandbits(32):08x}"
        self.seq = 0  # readings taken
        self.pid = 0
        self.pending: dict[int, tuple[int, bytes]] = {}  # pid -> (seq, packet), oldest first
        self.transport: asyncio.Transport | None = None
        self.online = False
        self.online_at = 0.0
        self.last_tx = 0.0  # PINGREQ when idle for half the keepalive, as the firmware does
        self.back = False  # online again since the fleet's ``since``
        self.lost_at = 0.0  # when its last working session was lost
        self.retry_at = 0.0  # when the first connect attempt after that began
        self.backlog_seq = -1  # readings below this seq are the backlog being watched
        self.step = fleet.backoff_min  # 0: a working session, whose loss retries soon
        self.stage = ""  # what the connect attempt waits for: its cause if it fails
        self.admitted = False  # CONNACK 0 on this link
        self.attempts = 0  # connect attempts that failed
        self.resent = 0
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None  # CONNACK code or SUBACK result
        self._lost: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.online:
            self.lost_at = time.monotonic()
            self.retry_at = 0.0
        self.transport = None
        self.online = False
        for fut in (self._waiter, self._lost):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if length < 0 or end - i < length:
                break
            kind = first >> 4
            if kind == 4 and length == 2:  # PUBACK
                if self.pending.pop(buf[i] << 8 | buf[i + 1], None) is not None:
                    self.fleet.acked += 1
                    if self.backlog_seq >= 0:
                        self._check_backlog()
            elif kind == 2 and length == 2:  # CONNACK
                self._answer(buf[i + 1])
            elif kind == 9 and length >= 3:  # SUBACK
                self._answer(0 if buf[i + 2] != 0x80 else 0x80)
            elif kind == 3:  # a command (none are sent): QoS 1 is acknowledged
                qos = (first >> 1) & 3
                if qos:
                    tlen = buf[i] << 8 | buf[i + 1]
                    pid = bytes(buf[i + 2 + tlen : i + 4 + tlen])
                    self.write(b"\x40\x02" + pid)
            pos = i + length
        if pos:
            del buf[:pos]

    def _check_backlog(self) -> None:
        """Counts the device once every reading below ``backlog_seq`` is acknowledged
        (``pending`` keeps send order, so its first entry is the oldest)."""
        pending = self.pending
        if not pending or next(iter(pending.values()))[0] >= self.backlog_seq:
            self.backlog_seq = -1
            self.fleet.drained += 1

    def _answer(self, code: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(code)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_tx = time.monotonic()

    # --- session ---------------------------------------------------------------------------
    async def _request(self, packet: bytes, timeout: float) -> int:
        self._waiter = asyncio.get_running_loop().create_future()
        self.write(packet)
        async with asyncio.timeout(timeout):  # no task per request, as wait_for makes
            return await self._waiter

    async def connect(self, timeout: float) -> None:
        """Connects, subscribes and resends what is queued; returns once online. Each step
        (TCP connect, CONNACK, SUBACK) may take ``timeout`` seconds."""
        fleet = self.fleet
        loop = asyncio.get_running_loop()
        self._buf.clear()
        self.admitted = False
        if not self.retry_at:
            self.retry_at = time.monotonic()
        self.stage = "tcp"
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: self, fleet.host, fleet.port, local_addr=(fleet.source, 0)
            )
        user, password = (None, None) if fleet.anonymous else (self.ident, self.secret)
        self.stage = "connack"
        code = await self._request(
            connect_packet(self.ident, user, password, fleet.keepalive), timeout
        )
        if code != 0:
            self.stage = f"connack{code}"
            raise ConnectionError(f"CONNACK {code}")
        self.admitted = True
        self.stage = "suback"
        sub = subscribe_packet(self._next_pid(), [(f"d/{self.ident}/c", 1)])
        lost = loop.create_future()
        if await self._request(sub, timeout) != 0:
            self.stage = "subscription refused"
            raise ConnectionError("subscription refused")
        self._lost = lost
        self.online = True
        self.online_at = time.monotonic()
        self.step = 0  # a working session
        fleet.online += 1
        if not self.back and self.online_at >= fleet.since:
            self.back = True
            fleet.back += 1
        if self.pending:  # unacknowledged readings go again, oldest first, with DUP
            self.resent += len(self.pending)
            self.write(b"".join(bytes((p[0] | 0x08,)) + p[1:] for _, p in self.pending.values()))

    async def run(self, gate: asyncio.Semaphore | None) -> None:
        """Keeps the device connected for ever, backing off as the firmware does; ``gate``
        bounds the first connects in flight (the fleet's start, not a storm)."""
        fleet = self.fleet
        while not fleet.stopping:
            self._lost = None
            try:
                if gate is not None:  # the fleet's start: patient, not part of a storm
                    async with gate:
                        await self.connect(fleet.setup_timeout)
                    gate = None
                else:
                    await self.connect(fleet.io_timeout)
                assert self._lost is not None
                await self._lost
            except (OSError, ConnectionError, TimeoutError) as exc:
                if self._lost is None:  # the attempt failed: why, for the bench's table
                    cause = (
                        self.stage
                        if self.stage.startswith(("connack", "sub"))
                        else (f"{type(exc).__name__} at {self.stage}")
                    )
                    fleet.causes[cause] = fleet.causes.get(cause, 0) + 1
            was_online = self._lost is not None
            if self.transport is not None:
                self.transport.abort()
            if self.online:
                self.online = False
                fleet.online -= 1
            if fleet.stopping:
                return
            # firmware/node/session.py link_failed, for one hub address:
            step = self.step
            worked = not step  # nothing failed since the last working session
            if worked:
                step = self.step = fleet.backoff_min
            if was_online and worked:  # a working session lost: soon, spread over the window
                delay = random.random() * SPREAD * step
            elif self.admitted:  # admitted, then its subscription refused: 0 to all of it
                delay = random.random() * step
                self.step = min(step * 2, fleet.backoff_max)
            else:  # failed: half to all of the step, which doubles
                self.attempts += 1
                delay = step / 2 + random.random() * step / 2
                self.step = min(step * 2, fleet.backoff_max)
            await asyncio.sleep(delay)

    def _next_pid(self) -> int:
        pid = self.pid
        while True:
            pid = pid % 65535 + 1
            if pid not in self.pending:
                self.pid = pid
                return pid

    def take_reading(self, now: float) -> None:
        seq = self.seq
        self.seq = seq + 1
        pid = self._next_pid()
        payload = b"%s,%d,%.4f" % (self.boot.encode(), seq, now % CLOCK_WRAP)
        packet = publish_packet(self.topic, payload, 1, pid)
        self.pending[pid] = (seq, packet)
        self.fleet.sent += 1
        if self.online:
            self.write(packet)


class Fleet:
    """A worker's devices and what they measured."""

    def __init__(self, spec: Spec) -> None:
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.source: str = spec.get("source", "127.0.0.1")
        self.anonymous: bool = spec.get("anonymous", False)
        self.keepalive: int = spec.get("keepalive", 60)
        self.io_timeout: float = spec.get("io_timeout", 5.0)  # the firmware's default
        self.setup_timeout: float = spec.get("setup_timeout", 120.0)  # the first connect
        self.backoff_min: float = spec.get("backoff_min", 1.0)
        self.backoff_max: float = spec.get("backoff_max", 60.0)
        self.period: float = spec.get("period", 10.0)
        self.spec = spec
        self.stopping = False
        self.publishing = False
        self.online = 0  # devices online now
        self.since = float("inf")  # watch: devices online again since then are counted
        self.back = 0
        self.drained = 0  # watch: devices whose backlog is acknowledged
        self.causes: dict[str, int] = {}  # failed connect attempts by cause
        self.sent = 0
        self.acked = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.devices = [
            Device(d[0], None if self.anonymous else d[1], self) for d in spec["devices"]
        ]
        self.latencies: list[float] = []
        self.browser_received = 0
        self.lags: list[float] = []  # this worker's event loop, sampled every LAG_PROBE_S
        self.pings: list[float] = []  # the browser's PINGREQ -> PINGRESP round trips

    def _browser_hook(self, _topic: bytes, payload: bytes, now: float) -> None:
        self.browser_received += 1
        try:
            sent = float(payload.rsplit(b",", 1)[1])
        except (ValueError, IndexError):
            return
        lat = now % CLOCK_WRAP - sent
        if lat < -CLOCK_WRAP / 2:
            lat += CLOCK_WRAP
        self.latencies.append(lat)

    async def open_browser(self) -> WsClient:
        user, token = (None, None) if self.anonymous else ("token", self.spec.get("token"))
        for attempt in range(50):  # Mosquitto's WebSocket listener can start after its TCP one
            ws = WsClient(self._browser_hook)
            try:
                await ws.open(self.spec["ws_url"], f"bench-browser-{os.getpid()}", user, token)
                break
            except ConnectionRefusedError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
        await ws.subscribe([("d/+/t/+", 0)])
        return ws

    async def connect(self) -> float:
        t0 = time.monotonic()
        gate = asyncio.Semaphore(self.spec.get("concurrency", 100))
        for device in self.devices:
            task = asyncio.get_running_loop().create_task(device.run(gate))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        while self.online < len(self.devices):
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    async def probe_lag(self) -> None:
        """How late this worker's event loop runs timers: a reading timed on a late loop
        counts the lateness as the broker's."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.lags.append(loop.time() - due)

    async def ping_broker(self, ws: WsClient) -> None:
        """The browser's PINGREQ every PING_EVERY_S, timed to its PINGRESP: the broker
        answers one as it reads it, so the round trip is how far behind its event loop runs
        (a reading's latency without it is what its delivery added)."""
        sent: list[float] = []

        def answered(now: float) -> None:
            if sent:
                self.pings.append(now - sent.pop(0))

        ws.client.on_pingresp = answered
        while not self.stopping:
            sent.append(time.monotonic())
            await ws.send(b"\xc0\x00")
            await asyncio.sleep(PING_EVERY_S)

    async def ping(self) -> None:
        """A PINGREQ from each online device idle for half its keepalive (firmware/node/
        link.py does the same), so a slow start or a long period never looks like silence."""
        while not self.stopping:
            await asyncio.sleep(min(5.0, self.keepalive / 4))
            idle = time.monotonic() - self.keepalive / 2
            for device in self.devices:
                if device.online and device.last_tx < idle:
                    device.write(b"\xc0\x00")

    async def publish(self) -> None:
        """One reading per device per period, at random phases, until stopped."""
        self.publishing = True
        self.lags.clear()  # the measured window starts: loop lag and pings from here on
        self.pings.clear()
        if not self.devices:  # the browser's worker
            return
        phase = sorted((random.random() * self.period, d) for d in self.devices)
        t0 = time.monotonic()
        rounds = 0
        while self.publishing:
            base = t0 + rounds * self.period
            for offset, device in phase:
                delay = base + offset - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self.publishing:
                    return
                device.take_reading(time.monotonic())
            rounds += 1

    async def watch(self, since: float, limit: float) -> dict[str, Any]:
        """Waits until every device is online again (connected after ``since``) and its
        readings taken so far are acknowledged; when each happened, or how far it got
        within ``limit`` seconds."""
        self.since = since
        backlog = 0
        for d in self.devices:
            if d.online and d.online_at >= since and not d.back:
                d.back = True
                self.back += 1
            backlog += len(d.pending)
            d.backlog_seq = d.seq
            if not d.pending:
                d._check_backlog()
        n = len(self.devices)
        online_at = backlog_at = None
        cpu0, cpu_back = _cpu(), None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            now = time.monotonic()
            if online_at is None and self.back >= n:
                online_at = max(d.online_at for d in self.devices)
                cpu_back = _cpu() - cpu0
            if backlog_at is None and self.drained >= n:
                backlog_at = now
            if online_at is not None and backlog_at is not None:
                break
            await asyncio.sleep(0.02)
        return {
            "online_at": online_at,
            "backlog_at": backlog_at,
            "backlog": backlog,
            "back": self.back,
            "drained": self.drained,
            # Seconds from ``since`` until each device was online again; this worker's CPU
            # from the command until all were.
            "back_after": sorted(round(d.online_at - since, 3) for d in self.devices if d.back),
            "lost_after": sorted(
                round(d.lost_at - since, 3) for d in self.devices if d.lost_at >= since
            ),
            "retry_after": sorted(
                round(d.retry_at - since, 3) for d in self.devices if d.lost_at >= since
            ),
            "cpu_until_back_s": None if cpu_back is None else round(cpu_back, 2),
            "causes": dict(self.causes),
        }

    async def stop(self, drain_s: float) -> dict[str, Any]:
        self.publishing = False
        deadline = time.monotonic() + drain_s
        while any(d.pending for d in self.devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stopping = True
        for device in self.devices:
            if device.transport is not None:
                device.transport.write(b"\xe0\x00")
                device.transport.close()
        return {
            # Readings taken, and those still queued (not lost: they wait for a PUBACK).
            "devices": [
                [d.ident, d.boot, d.seq, [seq for seq, _ in d.pending.values()]]
                for d in self.devices
            ],
            "sent": self.sent,
            "acked": self.acked,
            "pending": sum(len(d.pending) for d in self.devices),
            "resent": sum(d.resent for d in self.devices),
            "failed_attempts": sum(d.attempts for d in self.devices),
            "causes": dict(self.causes),
            "max_failed_attempts": max((d.attempts for d in self.devices), default=0),
            "browser_received": self.browser_received,
            "loop_lag_ms": _lag_summary(self.lags),
            "ping_rtt_ms": _lag_summary(self.pings),
            "latencies": [round(x, 5) for x in self.latencies],
        }


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = Fleet(json.loads(await reader.readline()))
    pinger = loop.create_task(fleet.ping())
    lag = loop.create_task(fleet.probe_lag())
    browser = await fleet.open_browser() if fleet.spec.get("browser") else None
    pings = loop.create_task(fleet.ping_broker(browser)) if browser is not None else None
    cpu0 = _cpu()
    publisher: asyncio.Task[None] | None = None

    def answer(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    while True:
        line = await reader.readline()
        if not line:
            return
        command = json.loads(line)
        name = command["cmd"]
        if name == "connect":
            answer({"mark": "connected", "seconds": round(await fleet.connect(), 3)})
        elif name == "publish":
            publisher = loop.create_task(fleet.publish())
        elif name == "watch":
            answer({"mark": "recovered", **await fleet.watch(command["since"], command["limit"])})
        elif name == "stop":
            result = await fleet.stop(command.get("drain_s", 60.0))
            if publisher is not None:
                publisher.cancel()
            pinger.cancel()
            lag.cancel()
            if pings is not None:
                pings.cancel()
            if browser is not None:
                await browser.close()
            answer({"result": {**result, "cpu_s": round(_cpu() - cpu0, 2)}})
            return


def main() -> None:
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_LOADGEN_CPUS"):
        os.sched_setaffinity(0, {int(c) for c in os.environ["BENCH_LOADGEN_CPUS"].split(",")})
    asyncio.run(_main())


if __name__ == "__main__":
    main()

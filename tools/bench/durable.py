"""The durable-state rows (`--only durable`): the hub against Mosquitto with `persistence true`.

- QoS 1 into an offline persistent session: a publisher with 100 PUBLISHes in flight, each
  PUBACK meaning (for the hub) that the message is on disk for the session.
- Restart with that many stored messages: SIGTERM, start again on the same data, the time
  until the broker listens, then the subscriber drains its queue (how many arrive, how fast).
- After SIGKILL: a further batch queued, the broker killed, restarted; how many arrive (the
  hub writes before it acknowledges; Mosquitto saves its database every ``autosave_interval``
  and at a clean stop only).
- The cost of durability on a QoS 1 flow: one publisher to one online subscriber, the
  subscriber's session clean, then persistent (every message recorded until acknowledged).

Both brokers run with anonymous access (the hub in development mode: topic rules and logins
are out of these rows) on a topic outside the device contract (no readings stored), pinned to
CPU 0 when pinning is on; the clients run in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hub.endpoints import Endpoints, ReadyLineError
from tools.bench.brokers import MOSQUITTO, BenchError, Broker, _wait_port, free_port
from tools.bench.mqtt import Client, PublishHook, connect_packet, publish_packet, subscribe

STORED = 100_000  # messages queued for the offline session, then the restart (--stored)
KILLED = 10_000  # messages queued before SIGKILL (--killed)
WINDOW = 100  # PUBLISHes in flight
IN_TRANSIT = 500  # published to an online subscriber and not yet delivered to it
TOPIC = b"bench/durable"
LOADED_RE = re.compile(r"broker state loaded in ([0-9.]+) s")


class Side:
    """One broker on its own data (a data dir or Mosquitto's database), restartable."""

    def __init__(
        self, name: str, work: Path, cpus: set[int] | None, stored: int, killed: int
    ) -> None:
        self.name = name
        self.stored = stored
        self.killed = killed
        # Room for the batches, and never below the brokers' default (the online rows need it).
        self.queue_bound = max(stored + killed, 1000)
        self.work = work
        self.cpus = cpus
        self.broker: Broker | None = None
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        self.port = free_port()
        self.notes: list[str] = []
        # Mosquitto started as root writes its database as its own user, in a folder it can
        # reach (the bench's work folder is root's only).
        self.db_dir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-db-"))
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                os.chown(self.db_dir, user.pw_uid, user.pw_gid)

    def start(self) -> float:
        """Starts the broker; the seconds until it listens."""
        t0 = time.monotonic()
        if self.name == "hub":
            self.broker = self._start_hub()
        else:
            self.broker = self._start_mosquitto()
        return time.monotonic() - t0

    def stop(self, sig: int = signal.SIGTERM) -> float:
        assert self.broker is not None
        t0 = time.monotonic()
        proc = self.broker.proc
        proc.send_signal(sig)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return time.monotonic() - t0

    def _popen(self, cmd: list[str], log: Path) -> subprocess.Popen[str]:
        cpus = self.cpus
        with log.open("a") as out:
            return subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE if self.name == "hub" else subprocess.DEVNULL,
                stderr=out,
                text=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )

    def _start_hub(self) -> Broker:
        cmd = [
            sys.executable,
            "-m",
            "hub",
            "serve",
            "--host",
            "127.0.0.1",
            "--mqtt-port",
            str(self.port),
            "--ws-port",
            "0",
            "--mqtts-port",
            "0",
            "--wss-port",
            "0",
            "--data-dir",
            str(self.work / "data"),
            "--allow-anonymous",
            "--rate-limit",
            "0",
            "--log-level",
            "INFO",
            "--max-queued",
            str(self.queue_bound),
            "--max-queued-bytes",
            str(2**30),
        ]
        proc = self._popen(cmd, self.work / "hub.log")
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        try:
            Endpoints.parse(line)
        except ReadyLineError:
            proc.kill()
            raise BenchError(
                f"the hub did not start ({line!r}); see {self.work / 'hub.log'}"
            ) from None
        self.notes = [f"development mode, max_queued {self.queue_bound}, store_sync full"]
        return Broker("hub", proc, "127.0.0.1", self.port, "", self.cpus)

    def _start_mosquitto(self) -> Broker:
        if not Path(MOSQUITTO).exists():
            raise BenchError(f"{MOSQUITTO} is missing: run tools/bootstrap.sh")
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings false\nallow_anonymous true\nmax_connections -1\n"
            f"persistence true\npersistence_location {self.db_dir}/\n"
            f"max_queued_messages {self.queue_bound}\nmax_queued_bytes 0\n"
            f"log_dest stderr\nlog_type error\nlog_type warning\nlistener {self.port} 127.0.0.1\n"
        )
        proc = self._popen([MOSQUITTO, "-c", str(conf)], self.work / "mosquitto.log")
        _wait_port("127.0.0.1", self.port, proc, "mosquitto")
        self.notes = [
            f"persistence true (autosave_interval 1800 s), max_queued_messages {self.queue_bound}"
        ]
        return Broker("mosquitto", proc, "127.0.0.1", self.port, "", self.cpus)


def load_s(side: Side) -> float | None:
    """The hub's last "broker state loaded in S s" (its log), else None."""
    if side.name != "hub":
        return None
    found = LOADED_RE.findall((side.work / "hub.log").read_text(errors="replace"))
    return float(found[-1]) if found else None


async def _connect(
    port: int, client_id: str, clean: bool, hook: PublishHook | None = None
) -> Client:
    loop = asyncio.get_running_loop()
    for attempt in range(50):
        try:
            _, client = await loop.create_connection(lambda: Client(hook), "127.0.0.1", port)
            break
        except OSError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    client.write(connect_packet(client_id, None, None, 600, clean))
    if await asyncio.wait_for(client.connack, 30) != 0:
        raise BenchError(f"{client_id}: connection refused")
    return client


async def _publish(
    port: int,
    count: int,
    seconds: float | None = None,
    tag: bytes = b"m",
    sub: Client | None = None,
) -> dict[str, Any]:
    """QoS 1 with WINDOW in flight: ``count`` messages, or as many as fit in ``seconds``; with
    an online ``sub``, at most IN_TRANSIT published and not yet delivered to it (a closed loop:
    no queue overflows, the row measures the flow)."""
    pub = await _connect(port, "bench-durable-pub", True)
    pub.acks_only = True
    progress = asyncio.Event()
    pub.on_puback = lambda _n: progress.set()
    if sub is not None:
        sub.on_received = progress.set
    body = tag + b" %09d " + b"x" * 40
    sent = 0
    t0 = time.monotonic()
    deadline = t0 + seconds if seconds else None
    while sent < count and (deadline is None or time.monotonic() < deadline):
        while sent - pub.pubacks >= WINDOW or (
            sub is not None and sent - sub.received >= IN_TRANSIT
        ):
            progress.clear()
            await asyncio.wait_for(progress.wait(), 60)
        batch = min(WINDOW - (sent - pub.pubacks), count - sent)
        pub.write(
            b"".join(
                publish_packet(TOPIC, body % (sent + i), 1, (sent + i) % 65535 + 1)
                for i in range(batch)
            )
        )
        sent += batch
        await pub.drained()
    while pub.pubacks < sent:
        progress.clear()
        await asyncio.wait_for(progress.wait(), 60)
    took = time.monotonic() - t0
    pub.write(b"\xe0\x00")
    pub.close()
    return {"sent": sent, "seconds": round(took, 2), "acked_per_s": round(sent / took)}


async def _drain(port: int, tag: bytes, expect: int, quiet_s: float = 2.0) -> dict[str, Any]:
    """The persistent subscriber resumes its session and takes what was kept for it; counts
    the distinct messages of one batch (``tag``) among them."""
    t0 = time.monotonic()
    mine: set[bytes] = set()
    prefix = tag + b" "

    def hook(_topic: bytes, payload: bytes, _at: float) -> None:
        if payload.startswith(prefix):
            mine.add(payload[: len(prefix) + 9])

    sub = await _connect(port, "bench-durable-sub", False, hook)
    last, last_change = 0, time.monotonic()
    while len(mine) < expect and time.monotonic() - last_change < quiet_s:
        await asyncio.sleep(0.05)
        if sub.received != last:
            last, last_change = sub.received, time.monotonic()
    took = time.monotonic() - t0
    sub.write(b"\xe0\x00")
    sub.close()
    return {
        "delivered": len(mine),
        "received": sub.received,
        "seconds": round(took, 2),
        "per_s": round(sub.received / took) if took else None,
    }


async def _subscribe(port: int, clean: bool) -> Client:
    sub = await _connect(port, "bench-durable-sub", clean)
    await subscribe(sub, [(TOPIC.decode(), 1)])
    return sub


async def _online(port: int, clean: bool, seconds: float) -> dict[str, Any]:
    """QoS 1 to an online subscriber whose session is clean or persistent."""
    sub = await _subscribe(port, clean)
    result = await _publish(port, 10**9, seconds, sub=sub)
    end = time.monotonic() + 10
    while sub.received < result["sent"] and time.monotonic() < end:
        await asyncio.sleep(0.01)
    sub.write(b"\xe0\x00")
    sub.close()
    return {**result, "delivered": sub.received}


async def _scenario(side: Side, seconds: float) -> dict[str, Any]:
    port = side.port
    out: dict[str, Any] = {}
    out["qos1_clean"] = await _online(port, True, seconds)
    out["qos1_persistent"] = await _online(port, False, seconds)
    # A fresh persistent session, offline: what the last row left queued in it (a broker whose
    # subscriber fell behind keeps up to its queue bound) must not fill the queue first.
    (await _connect(port, "bench-durable-sub", True)).close()
    sub = await _subscribe(port, False)
    sub.write(b"\xe0\x00")
    sub.close()
    out["offline"] = await _publish(port, side.stored, tag=b"stored")
    out["stop_s"] = round(side.stop(), 2)
    out["restart_s"] = round(side.start(), 2)
    out["load_s"] = load_s(side)
    out["after_restart"] = await _drain(port, b"stored", side.stored)
    await _publish(port, side.killed, tag=b"killed")
    side.stop(signal.SIGKILL)
    side.start()
    out["after_kill"] = await _drain(port, b"killed", side.killed)
    return out


def run(
    name: str,
    work: Path,
    cpus: set[int] | None,
    seconds: float,
    stored: int = STORED,
    killed: int = KILLED,
) -> dict[str, Any]:
    """Every durable row against one broker (``name``: hub or mosquitto)."""
    side = Side(name, work / f"durable-{name}", cpus, stored, killed)
    own = os.sched_getaffinity(0)
    if cpus:  # the clients on the other CPU
        os.sched_setaffinity(0, (own - cpus) or own)
    first = side.start()
    try:
        result = {"start_empty_s": round(first, 2), **asyncio.run(_scenario(side, seconds))}
    finally:
        os.sched_setaffinity(0, own)
        if side.broker is not None and side.broker.proc.poll() is None:
            side.stop()
        shutil.rmtree(side.db_dir, ignore_errors=True)
    return {**result, "stored": stored, "killed": killed, "notes": side.notes}


def rows() -> list[tuple[str, tuple[str, ...], str]]:
    """The report's rows: name, path in the broker's results, unit."""
    return [
        (
            "durable: QoS 1 -> online clean session",
            ("durable", "qos1_clean", "acked_per_s"),
            "msg/s",
        ),
        (
            "durable: QoS 1 -> online persistent",
            ("durable", "qos1_persistent", "acked_per_s"),
            "msg/s",
        ),
        ("durable: QoS 1 -> offline session", ("durable", "offline", "acked_per_s"), "msg/s"),
        ("durable: clean stop with them (s)", ("durable", "stop_s"), "s"),
        ("durable: start, nothing stored (s)", ("durable", "start_empty_s"), "s"),
        ("durable: restart until listening (s)", ("durable", "restart_s"), "s"),
        ("durable:   of which the state load (s)", ("durable", "load_s"), "s"),
        ("durable: delivered after restart", ("durable", "after_restart", "delivered"), ""),
        ("durable: drain after restart", ("durable", "after_restart", "per_s"), "msg/s"),
        ("durable: delivered after SIGKILL", ("durable", "after_kill", "delivered"), ""),
        ("durable:   messages received then", ("durable", "after_kill", "received"), ""),
    ]

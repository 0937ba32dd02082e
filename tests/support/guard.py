"""Helpers for the abuse tests: a canary client, the hub's memory, hub events, a hub with a log.

The canary runs in a thread of its own with blocking sockets, so what the test's event loop
does (sending a flood) does not delay it: its PUBACK latency is the hub's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.hubproc import HubProcess, hub_cli, scaled, start_hub
from tests.support.mqtt import RawClient, connect_packet, publish_packet
from tests.support.waits import eventually

CANARY_BUDGET = scaled(0.1)  # the canary's PUBACK latency stays under this


def rss_kb(hub: HubProcess) -> int:
    """The hub's resident memory (VmRSS) in KB."""
    for line in Path(f"/proc/{hub.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def logged_hub(tmp_path: Path, *options: str, secure: bool = False) -> Iterator[HubProcess]:
    """A hub of the test's own whose log (stderr) goes to tmp_path / "hub.log"."""
    with (tmp_path / "hub.log").open("w") as log:
        process = start_hub(tmp_path / "hub-data", *options, stderr=log, secure=secure)
        try:
            yield process
        finally:
            process.stop()


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "hub.log").read_text(errors="replace").splitlines()


class Canary:
    """A client that publishes QoS 1 to its own topic every ``period`` seconds and records
    each PUBACK's latency, in a thread, until stopped."""

    def __init__(
        self, hub: HubProcess, client_id: str = "canary", period: float = 0.05, **connect: object
    ) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._sock = socket.create_connection((hub.host, hub.mqtt_port), timeout=scaled(5))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(connect_packet(client_id, **connect))  # type: ignore[arg-type]
        ack = self._read(4)
        assert ack[:2] == b"\x20\x02" and ack[3] == 0, f"canary refused: {ack!r}"
        self._topic = f"canary/{client_id}"
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the hub closed the canary's connection")
            data += chunk
        return data

    def __enter__(self) -> Canary:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(AssertionError):  # a few rounds at least, however quick the
            eventually(  # test; check() judges them
                lambda: len(self.latencies) >= 3 or self.errors, 2, "3 PUBACKs", poll=0.01
            )
        self._stop.set()
        self._thread.join(scaled(10))
        self._sock.close()

    def _run(self) -> None:
        pid = 0
        while not self._stop.is_set():
            pid = pid % 65535 + 1
            start = time.monotonic()
            try:
                self._sock.sendall(publish_packet(self._topic, b"tweet", qos=1, pid=pid))
                ack = self._read(4)
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.latencies.append(time.monotonic() - start)
            if ack != b"\x40\x02" + struct.pack("!H", pid):
                self.errors.append(f"expected PUBACK {pid}, got {ack!r}")
                return
            self._stop.wait(self._period)

    def check(self, at_least: int = 3) -> None:
        """The canary was served throughout: no error, every PUBACK within the budget."""
        assert not self.errors, self.errors
        assert len(self.latencies) >= at_least, f"only {len(self.latencies)} PUBACKs"
        worst = max(self.latencies)
        assert worst < CANARY_BUDGET, (
            f"canary PUBACK took {worst * 1000:.0f} ms (budget {CANARY_BUDGET * 1000:.0f} ms)"
        )


class Events:
    """An admin token's view of $hub/events/#."""

    def __init__(self, client: RawClient) -> None:
        self.client = client

    @classmethod
    async def watch(cls, hub: HubProcess, client_id: str = "admin-ui") -> Events:
        # The token first: `hub token create` is a process of its own, and a connection left
        # without a CONNECT for that long is one the hub may close (connect_timeout).
        admin = token(hub, "--admin")
        client = await RawClient.tcp(hub.host, hub.mqtt_port)
        _, code = await client.connect(client_id, username="token", password=admin)
        assert code == 0
        assert await client.subscribe([("$hub/events/#", 0)]) == [0]
        return cls(client)

    async def expect(self, event: str, timeout: float = scaled(5), **fields: object) -> dict:
        """The next event of this kind whose body has these fields; others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.client.next_message(max(0.05, deadline - time.monotonic()))
            body = json.loads(msg.payload)
            if body["event"] == event and all(body.get(k) == v for k, v in fields.items()):
                return dict(body)


async def count_publishes(client: RawClient, prefix: bytes, count: int, timeout: float) -> int:
    """Reads until ``count`` PUBLISH packets on topics starting with ``prefix`` have arrived
    (other packets are skipped) or no byte came for ``timeout`` s; returns how many did.
    Parses lengths only: fast enough to keep up with a broker sending 100,000 messages."""
    got = 0
    skip = len(prefix)
    buf = client._buffer
    while got < count:
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # the length field is not all here yet
            if i + length > end:
                break
            got += buf[pos] >> 4 == 3 and buf[i + 2 : i + 2 + skip] == prefix
            pos = i + length
        del buf[:pos]
        if got < count:
            try:
                await asyncio.wait_for(client._fill(), timeout)
            except TimeoutError:
                return got
    return got

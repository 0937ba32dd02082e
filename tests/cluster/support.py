"""What the cluster-mode tests share: hubs in cluster mode as subprocesses, firmware devices
given every node's address, the hub events an admin token sees, and the store's readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from hub.endpoints import Endpoints
from tests.support.devices import Device
from tests.support.firmware import FAST
from tests.support.hubproc import scaled
from tests.support.mqtt import RawClient
from tests.support.waits import eventually_async
from tools import mpunix
from tools.cluster import Cluster
from tools.cluster.hubrun import hub_command
from tools.credentials import with_hubs
from tools.hubaddr import HubAddress


class ClusterHub:
    """`hub serve --broker rabbitmq` against the cluster, its log in a file."""

    def __init__(
        self, cluster: Cluster, data_dir: Path, auth_port: int, store: str, log: Path
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        cmd = hub_command(
            cluster,
            data_dir,
            auth_port,
            "--store",
            store,
            "--rate-limit",
            "0",
            "--log-level",
            "INFO",
        )
        with log.open("a") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        self.ready_line = self.proc.stdout.readline().strip()
        if not self.ready_line:
            self.proc.kill()
            raise AssertionError(f"the hub did not start: {log.read_text()[-2000:]}")
        self.endpoints = Endpoints.parse(self.ready_line)
        self.http_url = f"http://{self.endpoints.http[0]}:{self.endpoints.http[1]}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.http_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            return json.load(response)


def start_firmware(folder: Path, device_id: str, secret: str, mqtt_ports: list[int]) -> Device:
    """A firmware device on the unix port that knows every node (it tries them in order)."""
    settings = mpunix.DeviceSettings(
        id=device_id,
        hub_host="127.0.0.1",
        hub_port=mqtt_ports[0],
        username=device_id,
        password=secret,
        period_s=1,
        keepalive_s=FAST["keepalive_s"],
        io_timeout_s=FAST["io_timeout_s"],
        ack_timeout_s=FAST["ack_timeout_s"],
        backoff_min_ms=FAST["backoff_min_ms"],
        backoff_max_ms=FAST["backoff_max_ms"],
    )
    root = mpunix.prepare_device_dir(folder / device_id, settings)
    hubs = [HubAddress("127.0.0.1", port, False) for port in mqtt_ports]
    (root / "settings.json").write_text(json.dumps(with_hubs(settings, hubs)))
    device = Device(root, folder / f"{device_id}.log")
    device.start()
    return device


class Events:
    """Every hub event an admin token's MQTT client on a node receives."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def watch(cls, port: int, token: str, client_id: str) -> Events:
        client = await RawClient.tcp("127.0.0.1", port)
        assert await client.connect(client_id, username="token", password=token) == (False, 0)
        assert await client.subscribe([("$hub/events/#", 0)]) == [0]
        return cls(client)

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = await self.client.next_message(timeout=3600)
                self.seen.append(json.loads(message.payload))

    async def wait_for(self, what: str, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any]:
            for event in self.seen:
                if event.get("event") == what and all(
                    str(fields[k]) in str(event.get(k)) for k in fields
                ):
                    return event
            raise AssertionError(f"no {what} event with {fields} in {self.seen[-10:]}")

        return await eventually_async(found, scaled(15), f"a {what} event")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()


def stored(store: str, device: str) -> dict[str, list[int]]:
    """Each boot's stored sequence numbers, in order."""
    with psycopg.connect(store) as db:
        rows = db.execute(
            "SELECT boot, seq FROM readings WHERE device = %s ORDER BY boot, seq", (device,)
        ).fetchall()
    out: dict[str, list[int]] = {}
    for boot, seq in rows:
        out.setdefault(boot, []).append(seq)
    return out

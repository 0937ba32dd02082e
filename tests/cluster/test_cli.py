"""`python -m tools.cluster --hub --data-dir D`: one node and a hub in cluster mode against it,
a device registered in D logging in through the hub's auth backend, and SIGTERM stopping all."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.hubproc import hub_cli, scaled
from tests.support.mqtt import RawClient
from tools.cluster import procs
from tools.cluster.nodes import RABBITMQ_BIN

pytestmark = [
    pytest.mark.skipif(
        not (RABBITMQ_BIN / "rabbitmq-server").exists(),
        reason="rabbitmq-server is not installed (tools/bootstrap.sh installs it)",
    ),
    pytest.mark.timeout(scaled(240)),
]

READY_RE = re.compile(
    r"^ready mqtt=127\.0\.0\.1:(\d+) ws=\S+ amqp=\S+ mgmt=\S+ http=127\.0\.0\.1:(\d+) "
    r"credentials=(\S+)$"
)


def test_cli_hub_serves_the_cluster_and_stops_with_it(tmp_path: Path) -> None:
    """The ready line adds the hub's console; a device registered in the data dir logs in on
    the node (the hub answers the auth backend) and a wrong secret does not; SIGTERM stops the
    hub and the node, exit 0, nothing left running."""
    data, folder = tmp_path / "data", tmp_path / "cluster"
    added = hub_cli(data, "device", "add", "cli-dev", "--allow-insecure")
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["password"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cluster",
            "--nodes",
            "1",
            "--dir",
            str(folder),
            "--hub",
            "--data-dir",
            str(data),
            "--timeout",
            str(scaled(90)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY_RE.match(line)
        assert match is not None, f"{line!r} {proc.stderr.read() if not line else ''}"
        mqtt_port, http_port = int(match.group(1)), int(match.group(2))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/hub", timeout=scaled(10))
        assert refused.value.code == 401  # the hub's console answers, and wants a login

        async def login(password: str) -> int:
            client = await RawClient.tcp("127.0.0.1", mqtt_port)
            try:
                return (await client.connect("cli-dev", username="cli-dev", password=password))[1]
            finally:
                await client.close()

        assert asyncio.run(login(secret)) == 0
        assert asyncio.run(login("wrong")) in (4, 5)
        started = procs.tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(60)) == 0
        assert procs.wait_ended(started, scaled(5)) == []
        assert [p.pid for p in procs.sharing_home(folder / "home")] == []
    finally:
        if proc.poll() is None:
            proc.kill()

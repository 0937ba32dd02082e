"""What the route tests share: a config file with routes, a hub on it, publishing as a
client, and reading hub events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.configfile import _toml_value
from tests.support.hubproc import HubProcess, hub_cli, start_hub
from tests.support.mqtt import RawClient


def write_config(path: Path, routes: list[dict[str, Any]], **settings: Any) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    for route in routes:
        lines += ["", "[[routes]]"] + [f"{k} = {_toml_value(v)}" for k, v in route.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def hub_with_routes(
    tmp_path: Path, routes: list[dict[str, Any]], *extra: str, log_name: str = "hub.log"
) -> HubProcess:
    """A hub (development mode: anonymous clients) reading routes from a config file."""
    config = write_config(tmp_path / "hub.toml", routes)
    with (tmp_path / log_name).open("a") as log:
        return start_hub(tmp_path / "data", "--config", str(config), *extra, stderr=log)


async def client(hub: HubProcess, client_id: str) -> RawClient:
    one = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await one.connect(client_id)
    assert code == 0
    return one


async def publish_readings(
    hub: HubProcess, device: str, seqs: range, sensor: str = "temp", pid_base: int = 1
) -> None:
    """Publishes readings as a device would (QoS 1, each acknowledged)."""
    one = await client(hub, f"pub-{device}-{pid_base}")
    for seq in seqs:
        await one.publish(
            f"d/{device}/t/{sensor}", b"b00f,%d,%d.5" % (seq, seq), qos=1, pid=seq % 60000 + 1
        )
    await one.disconnect()


def route_cli(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "route", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def dead_letters(hub: HubProcess, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in route_cli(hub, "dead-letters", name).splitlines()]

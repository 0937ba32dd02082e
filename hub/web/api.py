"""The HTTP API (JSON): devices, telemetry history (JSON or CSV) and commands.

Every endpoint needs a console session or ``Authorization: Bearer TOKEN`` (``hub token
create``); the guard in hub/web/auth.py has admitted the caller before a handler runs. Reading
a device needs a scope that may subscribe to its telemetry; commanding it, one that may
publish to its command topic (a session's scope is its role's). Registry and store queries run
off the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import logging
import time
from typing import Any

from aiohttp import web

from hub.broker import EmbeddedBroker
from hub.devicestate import DeviceStates
from hub.recorder import Recorder
from hub.registry import Registry
from hub.security import Identity
from hub.store import MAX_LIMIT, SqlHistory
from hub.topics import (
    SENSOR_RE,
    ContractError,
    check_device_id,
    command_topic,
    reply_topic,
)
from hub.web.auth import principal_of
from hub.web.fleet_api import FleetApi
from hub.web.inputs import error, json_object, number

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_TIMEOUT_S = 120.0


class Commands:
    """Sends commands as the hub and matches the devices' replies by command id."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self._broker = broker
        self._ids = itertools.count(int(time.time()) % 1_000_000 * 1000)
        self._waiting: dict[tuple[str, int], asyncio.Future[dict[str, Any]]] = {}

    def on_message(self, topic: str, payload: bytes) -> None:
        if not (topic.startswith("d/") and topic.endswith("/r")) or not self._waiting:
            return
        try:
            reply = json.loads(payload)
            key = (topic.split("/")[1], reply["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            return
        future = self._waiting.get(key)  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(reply)

    async def send(self, device: str, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        command_id = next(self._ids)
        key = (device, command_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            body = json.dumps({**command, "id": command_id}).encode()
            self._broker.publish(command_topic(device), body, qos=1)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(key, None)


class Api:
    def __init__(
        self,
        broker: EmbeddedBroker,
        registry: Registry,
        store: SqlHistory,
        fleet: FleetApi | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.store = store
        self.fleet = fleet or FleetApi(registry, store, DeviceStates(Recorder(store)), _none)
        self.commands = Commands(broker)
        broker.add_message_listener(self.commands.on_message)

    # --- helpers ---------------------------------------------------------------------------
    async def _device(self, request: web.Request, identity: Identity) -> str:
        device = request.match_info["id"]
        try:
            check_device_id(device)
        except ContractError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        if not identity.may_subscribe(f"d/{device}/t/+"):
            raise error(web.HTTPForbidden, f"this token may not read device {device!r}")
        if (
            device not in self.fleet.states.states
            and await asyncio.to_thread(self.registry.get, device) is None
        ):
            raise error(web.HTTPNotFound, f"no device {device!r}")
        return device

    async def _rows(self, request: web.Request) -> list[dict[str, Any]]:
        device = await self._device(request, principal_of(request).identity)
        query = request.query
        unknown = set(query) - {"sensor", "since", "until", "limit"}
        if unknown:
            raise error(web.HTTPBadRequest, f"unknown parameter {sorted(unknown)[0][:40]!r}")
        sensor = query.get("sensor")
        if sensor is not None and not SENSOR_RE.match(sensor):
            raise error(web.HTTPBadRequest, f"bad sensor name {sensor[:40]!r}")
        since = number(query, "since")
        until = number(query, "until")
        given = number(query, "limit")
        limit = 1000 if given is None else int(given)
        if not 1 <= limit <= MAX_LIMIT or (given is not None and limit != given):
            raise error(web.HTTPBadRequest, f"limit must be from 1 to {MAX_LIMIT}")
        rows = await asyncio.to_thread(self.store.query, device, sensor, since, until, limit)
        return [
            {"sensor": r.sensor, "boot": r.boot, "seq": r.seq, "value": r.value,
             "received_at": r.received_at}
            for r in rows
        ]  # fmt: skip

    # --- endpoints -------------------------------------------------------------------------
    async def devices(self, request: web.Request) -> web.Response:
        """Every device the caller may read: the fleet's DEVICE objects plus ``online`` and
        ``last_seen_at`` (the registry's last connect), sorted by id."""
        readable = await self.fleet.readable(principal_of(request).identity)
        out = []
        for device in sorted(readable):
            registered = readable[device]
            view = self.fleet.device_view(device, registered)
            view["online"] = view["status"] == "online"
            view["last_seen_at"] = registered.last_seen_at if registered else None
            out.append(view)
        return web.json_response(out)

    async def telemetry(self, request: web.Request) -> web.Response:
        return web.json_response(await self._rows(request))

    async def telemetry_csv(self, request: web.Request) -> web.Response:
        rows = await self._rows(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["received_at", "sensor", "boot", "seq", "value"])
        for r in rows:
            writer.writerow([r["received_at"], r["sensor"], r["boot"], r["seq"], r["value"]])
        return web.Response(text=buffer.getvalue(), content_type="text/csv")

    async def command(self, request: web.Request) -> web.Response:
        identity = principal_of(request).identity
        device = await self._device(request, identity)
        if not identity.may_publish(command_topic(device)):
            raise error(web.HTTPForbidden, f"this role or token may not command {device!r}")
        command = await json_object(request)
        if not isinstance(command.get("op"), str):
            raise error(web.HTTPBadRequest, 'a command is a JSON object with an "op"')
        command.pop("id", None)  # the hub numbers commands itself
        given = number(request.query, "timeout")
        timeout = COMMAND_TIMEOUT_S if given is None else given
        if not 0 < timeout <= MAX_COMMAND_TIMEOUT_S:
            raise error(web.HTTPBadRequest, f"timeout must be from 0 to {MAX_COMMAND_TIMEOUT_S} s")
        try:
            reply = await self.commands.send(device, command, timeout)
        except TimeoutError:
            raise error(
                web.HTTPGatewayTimeout, f"no reply from {device!r} on {reply_topic(device)} "
                f"within {timeout:g} s",
            ) from None  # fmt: skip
        return web.json_response(reply)


def _json_or_none(data: bytes | None) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _none(_: str) -> int:
    return 0

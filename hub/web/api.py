"""The HTTP API (JSON): the device list, telemetry history (JSON or CSV) and commands (sent
and waited for, or pending with ``wait=0``; hub/commands.py). The fleet console's reads are
in hub/web/fleet_api.py, alarms in hub/web/alarms_api.py; the app's route table names them.

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
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hub.alarmservice import AlarmService
from hub.broker import Broker
from hub.commands import CommandRefused, Commands
from hub.devicestate import DeviceStates
from hub.ota.guard import RESERVED_OPS
from hub.recorder import Recorder
from hub.registry import Registry
from hub.security import Identity
from hub.store import MAX_LIMIT, SqlHistory, StoreError
from hub.topics import (
    SENSOR_RE,
    ContractError,
    check_device_id,
    command_topic,
    reply_topic,
    telemetry_filter,
)
from hub.web.alarms_api import AlarmsApi
from hub.web.auth import principal_of
from hub.web.fleet_api import FleetApi
from hub.web.inputs import error, json_object, number

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
OP_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MAX_COMMAND_TIMEOUT_S = 120.0
COMMAND_TTL_S = 3600.0
MAX_COMMAND_TTL_S = 7 * 86400.0


class Api:
    def __init__(
        self,
        broker: Broker,
        registry: Registry,
        store: SqlHistory,
        fleet: FleetApi | None = None,
        commands: Commands | None = None,
        alarms: AlarmService | None = None,
        storage_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.store = store
        self.storage_stats = storage_stats
        self.fleet = fleet or FleetApi(registry, store, DeviceStates(Recorder(store)), _none)
        if commands is None:
            commands = Commands(broker, Recorder(store))
            broker.add_message_listener(commands.on_message)
        self.commands = commands
        if alarms is None:
            recorder = Recorder(store)
            alarms = AlarmService(store, recorder, DeviceStates(recorder), lambda k, e: None)
        self.alarms = AlarmsApi(alarms, store)

    # --- helpers ---------------------------------------------------------------------------
    async def _device(self, request: web.Request, identity: Identity) -> str:
        device = request.match_info["id"]
        try:
            check_device_id(device)
        except ContractError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        if not identity.may_subscribe(telemetry_filter(device)):
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
        try:
            rows = await asyncio.to_thread(self.store.query, device, sensor, since, until, limit)
        except StoreError as exc:
            log.warning("history of %s not served: %s", device, exc)
            raise error(web.HTTPServiceUnavailable, str(exc)) from None
        return [
            {
                "sensor": r.sensor,
                "boot": r.boot,
                "seq": r.seq,
                "value": r.value,
                "received_at": r.received_at,
            }
            for r in rows
        ]

    # --- endpoints -------------------------------------------------------------------------
    async def devices(self, request: web.Request) -> web.Response:
        """Every device the caller may read: the fleet's DEVICE objects plus ``online`` and
        ``last_seen_at`` (the registry's last connect), sorted by id."""
        readable = await self.fleet.readable(principal_of(request).identity)
        connected = {d.id: d.last_seen_at for d in await asyncio.to_thread(self.registry.list)}
        alarms = self.fleet.alarm_counts()
        out = []
        for device in sorted(readable):
            view = self.fleet.device_view(device, readable[device], alarms)
            view["online"] = view["status"] == "online"
            view["last_seen_at"] = connected.get(device)
            out.append(view)
        return web.json_response(out)

    async def status(self, request: web.Request) -> web.Response:
        """The hub's own state for operators (admin): storage (readings received, stored,
        pending, refused, whether the store is failing) and the data dir's free space."""
        storage = self.storage_stats() if self.storage_stats is not None else None
        return web.json_response({"time": time.time(), "storage": storage})

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
        """Sends a command. With ``wait=0`` answers 202 at once (the command stays pending
        until the device replies or it expires after ``ttl`` s); otherwise waits up to
        ``timeout`` s for the reply (504 without one)."""
        principal = principal_of(request)
        identity = principal.identity
        query = request.query
        unknown = set(query) - {"timeout", "wait", "ttl"}
        if unknown:
            raise error(web.HTTPBadRequest, f"unknown parameter {sorted(unknown)[0][:40]!r}")
        device = await self._device(request, identity)
        if not identity.may_publish(command_topic(device)):
            raise error(web.HTTPForbidden, f"this role or token may not command {device!r}")
        wait = query.get("wait", "1")
        if wait not in ("0", "1"):
            raise error(web.HTTPBadRequest, "wait must be 0 or 1")
        command = await json_object(request)
        if not isinstance(command.get("op"), str) or not OP_RE.match(command["op"]):
            raise error(
                web.HTTPBadRequest, 'a command is a JSON object with an "op" (a-z, 0-9, _)'
            )
        if command["op"] in RESERVED_OPS:  # app updates: `hub app` and rollouts (hub/ota)
            raise error(web.HTTPBadRequest, f"op {command['op']!r} is sent by the hub only")
        given = number(query, "timeout")
        timeout = COMMAND_TIMEOUT_S if given is None else given
        if not 0 < timeout <= MAX_COMMAND_TIMEOUT_S:
            raise error(web.HTTPBadRequest, f"timeout must be from 0 to {MAX_COMMAND_TIMEOUT_S} s")
        given = number(query, "ttl")
        ttl = COMMAND_TTL_S if given is None else given
        if not 0 < ttl <= MAX_COMMAND_TTL_S:
            raise error(web.HTTPBadRequest, f"ttl must be from 0 to {MAX_COMMAND_TTL_S:g} s")
        state = self.fleet.states.states.get(device) or {}
        online = state.get("status") == "online"
        try:
            record = self.commands.create(
                device, command, principal.name[:64], ttl if wait == "0" else timeout, online
            )
        except CommandRefused as exc:
            raise error(web.HTTPTooManyRequests, str(exc)) from None
        if wait == "0":
            await self.commands.stored()  # pending across a crash of the hub too
            return web.json_response(
                {
                    "id": record["id"],
                    "status": "pending",
                    "online": online,
                    "expires_at": record["expires_at"],
                },
                status=202,
            )
        try:
            reply = await self.commands.wait(record["id"], timeout)
        except TimeoutError:
            raise error(
                web.HTTPGatewayTimeout,
                f"no reply from {device!r} on {reply_topic(device)} within {timeout:g} s",
            ) from None
        return web.json_response(reply)

    async def command_status(self, request: web.Request) -> web.Response:
        """One command of the device's: pending, replied (with the reply) or expired."""
        device = await self._device(request, principal_of(request).identity)
        text = request.match_info["cid"]
        if not text.isdigit() or len(text) > 15:
            raise error(web.HTTPBadRequest, f"bad command id {text[:40]!r}")
        record = self.commands.get(int(text))
        if record is None:
            record = await asyncio.to_thread(self.store.command, int(text))
        if record is None or record["device"] != device:
            raise error(web.HTTPNotFound, f"no command {text} for {device!r}")
        return web.json_response({k: v for k, v in record.items() if k != "device"})


def _none() -> dict[str, int]:
    return {}

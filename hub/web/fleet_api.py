"""The fleet console's read side: the fleet list (paged, counted, searched, filtered, sorted),
one device, its chart series (downsampled in SQL), its health history and its history of
commands and events.

The fleet list comes from the hub's in-memory device-state table (hub/devicestate.py) and a
copy of the registry read again only when it changed, so it stays fast at 10,000
devices; registry and history queries run off the event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from aiohttp import web

from hub.devicestate import DeviceStates
from hub.history import MAX_SERIES_POINTS
from hub.registry import Registry
from hub.security import Identity
from hub.store import SqlHistory
from hub.topics import (
    SENSOR_RE,
    TELEMETRY_FILTER,
    ContractError,
    check_device_id,
    telemetry_filter,
)
from hub.web.auth import principal_of
from hub.web.inputs import error, number

REGISTRY_TTL_S = 30.0  # read again after this long even without a change (a safety net)
MAX_FLEET_LIMIT = 500
STATES = ("online", "offline", "asleep", "never", "alarm")
TLS_POLICIES = ("tls-required", "allow-insecure")
SORTS = ("id", "-id", "last_seen", "-last_seen")
DEFAULT_WINDOW_S = 86400.0
MAX_SENSORS_PER_REQUEST = 32
MAX_HISTORY = 1000

AlarmCounts = Callable[[], dict[str, int]]  # active alarms by device


class Registered(NamedTuple):
    """What the fleet shows of a device's registry entry."""

    enabled: bool
    tls_policy: str


def parse_digest(digest: str) -> dict[str, Registered]:
    """Registry.access_digest() as a map (ids, flags and policies have no ',' or ';')."""
    registered = {}
    for entry in digest.split(";") if digest else ():
        device, enabled, policy = entry.split(",")
        registered[device] = Registered(enabled == "1", policy)
    return registered


def check_params(query: Mapping[str, str], allowed: set[str]) -> None:
    unknown = set(query) - allowed
    if unknown:
        raise error(web.HTTPBadRequest, f"unknown parameter {sorted(unknown)[0][:40]!r}")


def whole(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    given = number(query, name)
    if given is None:
        return default
    if given != int(given) or not low <= given <= high:
        raise error(web.HTTPBadRequest, f"{name} must be a whole number from {low} to {high}")
    return int(given)


def window(query: Mapping[str, str]) -> tuple[float, float]:
    """[since, until) from the query: until defaults to now, since to a day before until."""
    until = number(query, "until")
    until = time.time() if until is None else until
    since = number(query, "since")
    since = until - DEFAULT_WINDOW_S if since is None else since
    if not since < until or until - since > 10 * 366 * 86400:
        raise error(web.HTTPBadRequest, "since must be before until, at most 10 years apart")
    return since, until


class FleetApi:
    def __init__(
        self, registry: Registry, store: SqlHistory, states: DeviceStates, alarms: AlarmCounts
    ) -> None:
        self.registry = registry
        self.store = store
        self.states = states
        self.alarm_counts = alarms
        self._registered: dict[str, Registered] = {}
        self._registered_at = -math.inf
        self._version = -1
        self._digest = ""
        self._refresh: asyncio.Lock | None = None

    def _read_registry(self) -> None:
        """On a thread: the registry again if anyone committed to it since the last read.
        The fleet has a registry connection of its own, so every change (the CLI's, the
        console's, the hub's last-seen writes) moves its data_version. Most are last-seen
        writes (every 0.5 s while devices come and go), which leave the access digest as it
        was: then nothing is parsed. (Reading every device's row instead took 1 to 4 s at
        10,000 devices while the hub was under load, and the fleet's first page waited.)"""
        version = self.registry.data_version()
        if version != self._version or time.monotonic() - self._registered_at > REGISTRY_TTL_S:
            digest = self.registry.access_digest()
            if digest != self._digest:
                self._registered, self._digest = parse_digest(digest), digest
            self._version, self._registered_at = version, time.monotonic()

    async def registered(self) -> dict[str, Registered]:
        """The registry as it is now (a version check off the loop; read again on change)."""
        if self._refresh is None:
            self._refresh = asyncio.Lock()
        async with self._refresh:
            before = self._registered
            await asyncio.to_thread(self._read_registry)
            if self._registered is not before:
                # Removed from the registry (by the console, on this connection's watch):
                # its state goes at once, before the hub clears its retained topics.
                for device in before.keys() - self._registered.keys():
                    self.states.forget(device)
        return self._registered

    def device_view(
        self, device: str, registered: Registered | None, alarms: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """The contract's DEVICE object."""
        state = self.states.states.get(device) or {}
        return {
            "id": device,
            "registered": registered is not None,
            "enabled": registered.enabled if registered else None,
            "tls_policy": registered.tls_policy if registered else None,
            "status": state.get("status"),
            "status_at": state.get("status_at"),
            "last_seen": state.get("last_seen"),
            "boot": state.get("boot"),
            "fw": state.get("fw"),
            "board": state.get("board"),
            "health": state.get("health"),
            "health_at": state.get("health_at"),
            "sensors": {k: dict(v) for k, v in (state.get("sensors") or {}).items()},
            "alarms": (self.alarm_counts() if alarms is None else alarms).get(device, 0),
        }

    async def readable(self, identity: Identity) -> dict[str, Registered | None]:
        known = await self.registered()
        every: dict[str, Registered | None] = dict.fromkeys(self.states.states.keys() - known)
        every.update(known)
        if identity.unrestricted or identity.may_subscribe(TELEMETRY_FILTER):
            return every
        return {d: r for d, r in every.items() if identity.may_subscribe(telemetry_filter(d))}

    async def device_id(self, request: web.Request) -> str:
        """The route's device: a valid id the caller may read that the hub knows (404)."""
        device = request.match_info["id"]
        try:
            check_device_id(device)
        except ContractError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        if not principal_of(request).identity.may_subscribe(telemetry_filter(device)):
            raise error(web.HTTPForbidden, f"this token may not read device {device!r}")
        if device not in self.states.states and device not in await self.registered():
            raise error(web.HTTPNotFound, f"no device {device!r}")
        return device

    # --- endpoints ---------------------------------------------------------------------------
    async def fleet(self, request: web.Request) -> web.Response:
        query = request.query
        check_params(query, {"offset", "limit", "q", "state", "board", "tls", "fw", "sort"})
        offset = whole(query, "offset", 0, 0, 10**9)
        limit = whole(query, "limit", 100, 1, MAX_FLEET_LIMIT)
        q = query.get("q", "")[:64].lower()
        wanted_state = query.get("state") or None
        if wanted_state is not None and wanted_state not in STATES:
            raise error(web.HTTPBadRequest, f"state must be one of {', '.join(STATES)}")
        tls = query.get("tls") or None
        if tls is not None and tls not in TLS_POLICIES:
            raise error(web.HTTPBadRequest, f"tls must be one of {', '.join(TLS_POLICIES)}")
        board = (query.get("board") or None, query.get("fw") or None)
        sort = query.get("sort") or "id"
        if sort not in SORTS:
            raise error(web.HTTPBadRequest, f"sort must be one of {', '.join(SORTS)}")
        started = time.perf_counter()
        readable = await self.readable(principal_of(request).identity)
        listed = time.perf_counter()
        alarms = self.alarm_counts()
        states = self.states.states
        blank: dict[str, Any] = {}
        # Counted over the whole fleet; filtered and sorted as light (id, last_seen) pairs,
        # DEVICE objects only for the page. One pass of few look-ups per device: it runs on
        # the event loop (about 30 ms at 10,000 devices on a quiet core).
        chosen_ids = []
        counts = dict.fromkeys((*STATES, "all"), 0)
        boards, firmware = set(), set()
        filtering = bool(q or wanted_state or tls or board[0] or board[1])
        by_seen = not sort.endswith("id")
        for device, registered in readable.items():
            state = states.get(device) or blank
            status = state.get("status") or "never"
            counts[status] += 1
            boards.add(state.get("board"))
            firmware.add(state.get("fw"))
            if filtering:
                count = alarms.get(device, 0) if alarms else 0
                if (
                    (q and q not in device)
                    or (wanted_state == "alarm" and not count)
                    or (wanted_state not in (None, "alarm") and status != wanted_state)
                    or (tls is not None and (registered is None or registered.tls_policy != tls))
                    or (board[0] is not None and state.get("board") != board[0])
                    or (board[1] is not None and state.get("fw") != board[1])
                ):
                    continue
            chosen_ids.append(device)
        counts["alarm"] = sum(1 for device, n in alarms.items() if n and device in readable)
        counts["all"] = len(readable)
        boards.discard(None)
        firmware.discard(None)
        if not by_seen:
            chosen_ids.sort(reverse=sort.startswith("-"))
        else:  # never seen last, whichever way
            seen = [(s.get("last_seen"), d) for d in chosen_ids if (s := states.get(d))]
            seen = sorted((p for p in seen if p[0] is not None), reverse=sort.startswith("-"))
            never = sorted(set(chosen_ids) - {d for _, d in seen})
            chosen_ids = [d for _, d in seen] + never
        rows = chosen_ids
        page = [self.device_view(d, readable[d], alarms) for d in rows[offset : offset + limit]]
        chosen = time.perf_counter()
        response = web.json_response(
            {
                "total": len(rows),
                "offset": offset,
                "limit": limit,
                "counts": counts,
                "boards": sorted(boards),
                "firmware": sorted(firmware),
                "devices": page,
            }
        )
        response.headers["Server-Timing"] = (
            f"registry;dur={(listed - started) * 1000:.1f}, "
            f"rows;dur={(chosen - listed) * 1000:.1f}, "
            f"json;dur={(time.perf_counter() - chosen) * 1000:.1f}"
        )
        return response

    async def device(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        device = await self.device_id(request)
        return web.json_response(self.device_view(device, (await self.registered()).get(device)))

    async def series(self, request: web.Request) -> web.Response:
        query = request.query
        check_params(query, {"sensor", "since", "until", "points"})
        device = await self.device_id(request)
        sensors = sorted(set(query.getall("sensor", [])))
        if len(sensors) > MAX_SENSORS_PER_REQUEST:
            raise error(web.HTTPBadRequest, f"at most {MAX_SENSORS_PER_REQUEST} sensors")
        for sensor in sensors:
            if not SENSOR_RE.match(sensor):
                raise error(web.HTTPBadRequest, f"bad sensor name {sensor[:40]!r}")
        since, until = window(query)
        points = whole(query, "points", 2000, 1, MAX_SERIES_POINTS)
        bucket, series = await asyncio.to_thread(
            self.store.series, device, sensors, since, until, points
        )
        return web.json_response(
            {"since": since, "until": until, "bucket_s": bucket, "series": series}
        )

    async def health(self, request: web.Request) -> web.Response:
        query = request.query
        check_params(query, {"since", "until", "points"})
        device = await self.device_id(request)
        since, until = window(query)
        points = whole(query, "points", 2000, 1, MAX_SERIES_POINTS)
        bucket, series = await asyncio.to_thread(
            self.store.health_series, device, since, until, points
        )
        return web.json_response({"since": since, "until": until, "bucket_s": bucket, **series})

    async def history(self, request: web.Request) -> web.Response:
        check_params(request.query, {"limit"})
        device = await self.device_id(request)
        limit = whole(request.query, "limit", 100, 1, MAX_HISTORY)
        found = await asyncio.to_thread(self.store.device_history, device, limit)
        return web.json_response(found)

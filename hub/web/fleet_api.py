"""The fleet console's read side: the fleet list (paged, counted, searched, filtered, sorted),
one device, its chart series (downsampled in SQL), its health history and its history of
commands and events.

The fleet list comes from the hub's in-memory device-state table (hub/devicestate.py) and a
copy of the registry refreshed at most every REGISTRY_TTL_S, so it stays fast at 10,000
devices; history queries run off the event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from hub.devicestate import DeviceStates
from hub.history import MAX_SERIES_POINTS
from hub.registry import Device, Registry
from hub.security import Identity
from hub.store import SqlHistory
from hub.topics import SENSOR_RE, ContractError, check_device_id
from hub.web.auth import principal_of
from hub.web.inputs import error, number

REGISTRY_TTL_S = 2.0
MAX_FLEET_LIMIT = 500
STATES = ("online", "offline", "asleep", "never", "alarm")
TLS_POLICIES = ("tls-required", "allow-insecure")
SORTS = ("id", "-id", "last_seen", "-last_seen")
DEFAULT_WINDOW_S = 86400.0
MAX_SENSORS_PER_REQUEST = 32
MAX_HISTORY = 1000

AlarmCount = Callable[[str], int]


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
        self, registry: Registry, store: SqlHistory, states: DeviceStates, alarms: AlarmCount
    ) -> None:
        self.registry = registry
        self.store = store
        self.states = states
        self.alarm_count = alarms
        self._registered: dict[str, Device] = {}
        self._registered_at = -math.inf
        self._refresh: asyncio.Lock | None = None

    async def registered(self) -> dict[str, Device]:
        """The registry, read at most every REGISTRY_TTL_S (one query, off the loop)."""
        if self._refresh is None:
            self._refresh = asyncio.Lock()
        async with self._refresh:
            if time.monotonic() - self._registered_at > REGISTRY_TTL_S:
                devices = await asyncio.to_thread(self.registry.list)
                self._registered = {d.id: d for d in devices}
                self._registered_at = time.monotonic()
        return self._registered

    def forget_registry(self) -> None:
        self._registered_at = -math.inf

    def device_view(self, device: str, registered: Device | None) -> dict[str, Any]:
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
            "alarms": self.alarm_count(device),
        }

    async def readable(self, identity: Identity) -> dict[str, Device | None]:
        known = await self.registered()
        ids = set(known) | set(self.states.states)
        return {d: known.get(d) for d in ids if identity.may_subscribe(f"d/{d}/t/+")}

    async def device_id(self, request: web.Request) -> str:
        """The route's device: a valid id the caller may read that the hub knows (404)."""
        device = request.match_info["id"]
        try:
            check_device_id(device)
        except ContractError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        if not principal_of(request).identity.may_subscribe(f"d/{device}/t/+"):
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
        views = [self.device_view(d, r) for d, r in (await self.readable(
            principal_of(request).identity)).items()]  # fmt: skip
        counts = dict.fromkeys((*STATES, "all"), 0)
        counts["all"] = len(views)
        for view in views:
            counts[view["status"] or "never"] += 1
            counts["alarm"] += view["alarms"] > 0
        boards = sorted({v["board"] for v in views if v["board"]})
        firmware = sorted({v["fw"] for v in views if v["fw"]})

        def keep(v: dict[str, Any]) -> bool:
            if q and q not in v["id"]:
                return False
            if wanted_state == "alarm":
                if not v["alarms"]:
                    return False
            elif wanted_state is not None and (v["status"] or "never") != wanted_state:
                return False
            if tls is not None and v["tls_policy"] != tls:
                return False
            return (board[0] is None or v["board"] == board[0]) and (
                board[1] is None or v["fw"] == board[1]
            )

        chosen = [v for v in views if keep(v)]
        if sort.endswith("id"):
            chosen.sort(key=lambda v: v["id"], reverse=sort.startswith("-"))
        else:  # never seen last, whichever way
            seen = sorted((v for v in chosen if v["last_seen"] is not None),
                          key=lambda v: (v["last_seen"], v["id"]),
                          reverse=sort.startswith("-"))  # fmt: skip
            chosen = seen + sorted((v for v in chosen if v["last_seen"] is None),
                                   key=lambda v: v["id"])  # fmt: skip
        return web.json_response({
            "total": len(chosen), "offset": offset, "limit": limit, "counts": counts,
            "boards": boards, "firmware": firmware,
            "devices": chosen[offset: offset + limit],
        })  # fmt: skip

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

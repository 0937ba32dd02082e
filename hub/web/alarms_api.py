"""Alarm rules and alarms over HTTP: list, add and remove rules (admin), list alarms and
acknowledge one (an operator or admin of the device). Rules are stored off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hub.alarms import MAX_RULES, RuleError, parse_rule
from hub.alarmservice import AlarmService
from hub.security import Identity
from hub.store import SqlHistory
from hub.topics import command_topic, telemetry_filter
from hub.web.auth import principal_of
from hub.web.fleet_api import check_params
from hub.web.inputs import error, json_object


def _readable(identity: Identity, device: str) -> bool:
    return identity.may_subscribe(telemetry_filter(device))


def _whole_id(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 15:
        raise error(web.HTTPBadRequest, f"bad {what} id {text[:40]!r}")
    return int(text)


class AlarmsApi:
    def __init__(self, service: AlarmService, store: SqlHistory) -> None:
        self.service = service
        self.store = store

    def _rule_visible(self, identity: Identity, rule: dict[str, Any]) -> bool:
        device = rule["scope"].get("device")
        return device is None or _readable(identity, device)

    async def rules(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        identity = principal_of(request).identity
        rules = sorted(self.service.alarms.rules.values(), key=lambda r: r["id"])
        return web.json_response([r for r in rules if self._rule_visible(identity, r)])

    async def add_rule(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        body = await json_object(request)
        body.pop("id", None)  # the hub numbers rules
        try:
            rule = parse_rule(body)
        except RuleError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        if len(self.service.alarms.rules) >= MAX_RULES:
            raise error(web.HTTPConflict, f"at most {MAX_RULES} alarm rules")
        stored = await asyncio.to_thread(self.store.save_alarm_rule, rule)
        await self.service.refresh()
        return web.json_response(stored, status=201)

    async def remove_rule(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        rule_id = _whole_id(request.match_info["id"], "rule")
        if not await asyncio.to_thread(self.store.remove_alarm_rule, rule_id):
            raise error(web.HTTPNotFound, f"no alarm rule {rule_id}")
        await self.service.refresh()
        return web.Response(status=204)

    async def alarms(self, request: web.Request) -> web.Response:
        check_params(request.query, {"state"})
        state = request.query.get("state", "active")
        if state not in ("active", "all"):
            raise error(web.HTTPBadRequest, "state must be active or all")
        identity = principal_of(request).identity
        found = self.service.alarms.listing(state == "all")
        return web.json_response([a for a in found if _readable(identity, a["device"])])

    async def acknowledge(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        principal = principal_of(request)
        alarm_id = _whole_id(request.match_info["id"], "alarm")
        alarm = self.service.alarms.find(alarm_id)
        if alarm is None or not _readable(principal.identity, alarm["device"]):
            raise error(web.HTTPNotFound, f"no alarm {alarm_id}")
        if not principal.identity.may_publish(command_topic(alarm["device"])):
            raise error(web.HTTPForbidden, "only an operator or admin acknowledges alarms")
        return web.json_response(self.service.alarms.acknowledge(alarm_id, principal.name))

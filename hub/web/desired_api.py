"""Desired state over HTTP: a device's document, its state (desired, reported, delta), the
groups and their documents. Reading a device's needs a scope that may read the device; the
groups, one that may read the whole fleet; writes are an admin's. A write names the version
it was based on: 409 when the document has moved on, 413 over the size limit, 400 for a
setting that is unknown or invalid (the message says which and why). Database work runs off
the event loop (hub/desired/store.py)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from hub.desired.document import MAX_BYTES, DocumentError, DocumentTooLarge
from hub.desired.service import DesiredService
from hub.desired.store import DesiredConflict, DesiredError, DesiredStore
from hub.groups import NAME_RE
from hub.registry import Registry
from hub.security import Identity
from hub.topics import DEVICE_ID_RE, telemetry_filter
from hub.web.auth import principal_of
from hub.web.fleet_api import check_params
from hub.web.inputs import error, json_object

MAX_MEMBERS = 1000  # ids listed with a group (its size is always given)


def _fleet_reader(identity: Identity) -> bool:
    return identity.may_subscribe("d/+/t/+")


class DesiredApi:
    def __init__(self, service: DesiredService, registry: Registry) -> None:
        self.service = service
        self.registry = registry

    @property
    def _store(self) -> DesiredStore:
        if self.service.store is None:
            raise error(web.HTTPServiceUnavailable, "desired state is not running")
        return self.service.store

    async def _device(self, request: web.Request) -> str:
        device = request.match_info["id"]
        if not DEVICE_ID_RE.match(device):
            raise error(web.HTTPBadRequest, f"bad device id {device[:40]!r}")
        if not principal_of(request).identity.may_subscribe(telemetry_filter(device)):
            raise error(web.HTTPForbidden, f"this token may not read device {device!r}")
        if await asyncio.to_thread(self.registry.get, device) is None:
            raise error(web.HTTPNotFound, f"no device {device!r}")
        return device

    def _group(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not NAME_RE.match(name):
            raise error(web.HTTPBadRequest, f"bad group name {name[:40]!r}")
        if not _fleet_reader(principal_of(request).identity):
            raise error(web.HTTPForbidden, "only a reader of the whole fleet sees groups")
        if not any(g.name == name for g in self.service.snap.groups):
            raise error(web.HTTPNotFound, f"no group {name!r}")
        return name

    # --- devices ----------------------------------------------------------------------------
    async def device_desired(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        device = await self._device(request)
        doc = await asyncio.to_thread(self._store.get, "device", device)
        desired, sources = self.service.snap.effective(device)
        return web.json_response(
            {
                **doc.public(),
                "effective": desired,
                "sources": sources,
                "groups": [g.name for g in self.service.snap.groups_of(device)],
            }
        )

    async def device_state(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        device = await self._device(request)
        return web.json_response(self.service.state(device))

    async def put_device_desired(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        device = await self._device(request)
        return await self._write(request, "device", device)

    # --- groups -----------------------------------------------------------------------------
    async def groups(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        if not _fleet_reader(principal_of(request).identity):
            raise error(web.HTTPForbidden, "only a reader of the whole fleet sees groups")
        snap = self.service.snap
        known = await self._registered()
        out = []
        for group in snap.groups:
            doc = snap.docs.get(("group", group.name))
            members = snap.members(group) & known
            out.append(
                {
                    **group.public(),
                    "size": len(members),
                    "version": doc.version if doc else 0,
                    "desired": doc.doc if doc else {},
                }
            )
        return web.json_response({"groups": out})

    async def _registered(self) -> set[str]:
        return {d.id for d in await asyncio.to_thread(self.registry.list)}

    async def group_desired(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        name = self._group(request)
        doc = await asyncio.to_thread(self._store.get, "group", name)
        group = next(g for g in self.service.snap.groups if g.name == name)
        members = sorted(self.service.snap.members(group) & await self._registered())
        return web.json_response(
            {
                **doc.public(),
                "group": group.public(),
                "size": len(members),
                "members": members[:MAX_MEMBERS],
            }
        )

    async def put_group_desired(self, request: web.Request) -> web.Response:
        check_params(request.query, set())
        name = self._group(request)
        return await self._write(request, "group", name)

    # --- writes -----------------------------------------------------------------------------
    async def _write(self, request: web.Request, scope: str, name: str) -> web.Response:
        body = await json_object(request)
        unknown = set(body) - {"version", "desired"}
        if unknown:
            raise error(web.HTTPBadRequest, f"unknown field {sorted(unknown)[0][:40]!r}")
        base = body.get("version")
        if isinstance(base, bool) or not isinstance(base, int) or base < 0:
            raise error(
                web.HTTPBadRequest,
                '"version" must be the version the change is based on (0 for a new document)',
            )
        if not isinstance(body.get("desired"), dict):
            raise error(web.HTTPBadRequest, '"desired" must be an object of settings')
        principal = principal_of(request)
        try:
            doc = await asyncio.to_thread(
                self._store.write,
                scope,
                name,
                principal.name,
                base=base,
                replace=body["desired"],
            )
        except DesiredConflict as exc:
            raise error(web.HTTPConflict, str(exc)) from None
        except DocumentTooLarge as exc:
            raise web.HTTPRequestEntityTooLarge(
                MAX_BYTES,
                exc.size,
                text=json.dumps({"error": str(exc), "limit": MAX_BYTES}),
                content_type="application/json",
            ) from None
        except (DocumentError, DesiredError) as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        await self.service.refresh(principal.name)
        return web.json_response(doc.public())

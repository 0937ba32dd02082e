"""The rollouts' HTTP API (admin): list them, one with its progress (per stage, per device),
start one (checked by the same function as `hub rollout start`), pause, resume and cancel."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.ota.rollout import RolloutEngine
from hub.ota.rollout_core import RolloutConflict, RolloutError, RolloutMissing
from hub.ota.rollout_store import RolloutStore, create_rollout, progress
from hub.web.auth import principal_of
from hub.web.inputs import error, json_object

ID_RE = re.compile(r"^[1-9][0-9]{0,11}\Z")


def _refused(exc: RolloutError) -> web.HTTPException:
    if isinstance(exc, RolloutMissing):
        return error(web.HTTPNotFound, str(exc))
    if isinstance(exc, RolloutConflict):
        return error(web.HTTPConflict, str(exc))
    return error(web.HTTPBadRequest, str(exc))


class RolloutsApi:
    def __init__(self, engine: RolloutEngine, data_dir: Path) -> None:
        self.engine = engine
        self.data_dir = data_dir

    def _store(self) -> RolloutStore:
        if self.engine.db is None:
            raise error(web.HTTPServiceUnavailable, "the rollouts are not running")
        return self.engine.db

    @staticmethod
    def _id(request: web.Request) -> int:
        text = request.match_info["id"]
        if not ID_RE.match(text):
            raise error(web.HTTPNotFound, f"no rollout {text[:20]!r}")
        return int(text)

    async def listing(self, request: web.Request) -> web.Response:
        """GET /api/rollouts: the newest first, each with its count of devices per state."""
        rows = await asyncio.to_thread(self._store().listing)
        return web.json_response({"rollouts": rows})

    async def show(self, request: web.Request) -> web.Response:
        """GET /api/rollouts/{id}: the rollout, its stages and each device's state."""
        rid = self._id(request)
        found = await asyncio.to_thread(self._store().get, rid)
        if found is None:
            raise error(web.HTTPNotFound, f"no rollout {rid}")
        return web.json_response(progress(found))

    async def create(self, request: web.Request) -> web.Response:
        """POST /api/rollouts {"app", "devices" | "group", "canary", "steps",
        "max_per_minute", "abort_failed_pct", "timeout_per_device"}: 201 and the rollout."""
        body = await json_object(request)
        by = principal_of(request).name
        try:
            found = await asyncio.to_thread(create_rollout, self.data_dir, body, by)
        except RolloutError as exc:
            raise _refused(exc) from None
        self.engine.wake()
        return web.json_response(progress(found), status=201)

    async def _act(self, request: web.Request, action: str) -> web.Response:
        rid = self._id(request)
        by = principal_of(request).name
        try:
            found: dict[str, Any] = await asyncio.to_thread(self._store().act, rid, action, by)
        except RolloutError as exc:
            raise _refused(exc) from None
        self.engine.wake()
        return web.json_response(progress(found))

    async def pause(self, request: web.Request) -> web.Response:
        """POST /api/rollouts/{id}/pause: no more devices assigned (those under way go on)."""
        return await self._act(request, "pause")

    async def resume(self, request: web.Request) -> web.Response:
        """POST /api/rollouts/{id}/resume."""
        return await self._act(request, "resume")

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /api/rollouts/{id}/cancel: ends it; no device is assigned after."""
        return await self._act(request, "cancel")

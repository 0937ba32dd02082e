"""Device and account management over the HTTP API (admins only; the guard checks).

Each action is a hub event naming who did it (``by``). Registry and account calls block on
SQLite (and argon2), so they run off the event loop. The API has its own registry
connection: the hub's registry watcher sees its changes like the CLI's, and disconnects a
disabled, rotated or removed device and clears a removed device's retained topics.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hub import certs
from hub.accounts import AccountError, Accounts
from hub.registry import ALLOW_INSECURE, TLS_REQUIRED, Registry, RegistryError
from hub.web.auth import Events, Principal, principal_of
from hub.web.inputs import error, json_object, text_field
from hub.web.session import Sessions

T = TypeVar("T")
# The registry's names; "insecure-allowed" (the console contract's wording) is accepted too.
TLS_POLICIES = {TLS_REQUIRED: False, ALLOW_INSECURE: True, "insecure-allowed": True}


def _http_error(exc: Exception) -> web.HTTPException:
    message = str(exc)
    if message.startswith("no "):
        return error(web.HTTPNotFound, message)
    if "already exists" in message:
        return error(web.HTTPConflict, message)
    return error(web.HTTPBadRequest, message)


async def _off_loop(call: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(call, *args)
    except (RegistryError, AccountError) as exc:
        raise _http_error(exc) from None


class Manage:
    def __init__(
        self,
        registry: Registry,
        accounts: Accounts,
        sessions: Sessions,
        data_dir: Path,
        events: Events,
    ) -> None:
        self.registry = registry
        self.accounts = accounts
        self.sessions = sessions
        self.data_dir = data_dir
        self.events = events

    def _event(self, kind: str, by: Principal, **details: Any) -> None:
        self.events(
            kind, {"identity": by.event_identity, "name": by.name, "by": by.name, **details}
        )

    # --- devices ---------------------------------------------------------------------------
    async def add_device(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        body = await json_object(request)
        device = text_field(body, "id", 64)
        insecure = body.get("allow_insecure", False)
        if not isinstance(insecure, bool):
            raise error(web.HTTPBadRequest, '"allow_insecure" must be true or false')
        secret = await _off_loop(partial(self.registry.add, device, allow_insecure=insecure))
        self._event("device_added", by, device=device, allow_insecure=insecure)
        return web.json_response(
            {"id": device, "username": device, "password": secret}, status=201
        )

    async def _set_enabled(self, request: web.Request, enabled: bool) -> web.Response:
        by = principal_of(request)
        device = request.match_info["id"]
        record = await _off_loop(self.registry.set_enabled, device, enabled)
        self._event("device_enabled" if enabled else "device_disabled", by, device=device)
        return web.json_response(record.public())

    async def disable_device(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, False)

    async def enable_device(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, True)

    async def rotate_device(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        device = request.match_info["id"]
        secret = await _off_loop(self.registry.rotate, device)
        self._event("device_rotated", by, device=device)
        return web.json_response({"id": device, "username": device, "password": secret})

    async def tls_policy(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        device = request.match_info["id"]
        policy = text_field(await json_object(request), "tls_policy", 32)
        if policy not in TLS_POLICIES:
            raise error(
                web.HTTPBadRequest, f'"tls_policy" must be {TLS_REQUIRED!r} or {ALLOW_INSECURE!r}'
            )
        record = await _off_loop(self.registry.set_tls_policy, device, TLS_POLICIES[policy])
        self._event("device_tls_policy", by, device=device, tls_policy=record.tls_policy)
        return web.json_response(record.public())

    async def issue_cert(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        device = request.match_info["id"]
        await _off_loop(self.registry.require, device)
        try:
            issued = await asyncio.to_thread(certs.issue_device_cert, self.data_dir, device)
        except certs.CertError as exc:
            raise error(web.HTTPConflict, str(exc)) from None
        cert, key = await asyncio.to_thread(
            lambda: (issued.cert.read_bytes(), issued.key.read_bytes())
        )
        await _off_loop(self.registry.set_cert, device, issued.fingerprint)
        self._event("device_cert_issued", by, device=device, fingerprint=issued.fingerprint)
        return web.json_response(
            {
                "id": device,
                "fingerprint": issued.fingerprint,
                "cert_der_b64": base64.b64encode(cert).decode(),
                "key_der_b64": base64.b64encode(key).decode(),
            }
        )

    async def remove_device(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        device = request.match_info["id"]
        await _off_loop(self.registry.remove, device)
        self._event("device_removed", by, device=device)
        return web.Response(status=204)

    # --- accounts --------------------------------------------------------------------------
    async def users(self, request: web.Request) -> web.Response:
        accounts = await _off_loop(self.accounts.list)
        return web.json_response([a.public() for a in accounts])

    async def add_user(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        body = await json_object(request)
        name = text_field(body, "name", 64)
        role = text_field(body, "role", 16)
        password = await _off_loop(self.accounts.add, name, role)
        self._event("user_added", by, account=name, role=role)
        return web.json_response({"name": name, "role": role, "password": password}, status=201)

    def _not_self(self, by: Principal, name: str) -> None:
        if by.via == "session" and by.name == name:
            raise error(web.HTTPConflict, "you cannot disable or remove your own account")

    async def _set_user_enabled(self, request: web.Request, enabled: bool) -> web.Response:
        by = principal_of(request)
        name = request.match_info["name"]
        if not enabled:
            self._not_self(by, name)
        account = await _off_loop(self.accounts.set_enabled, name, enabled)
        if not enabled:
            self.sessions.end_account(name)
        self._event("user_enabled" if enabled else "user_disabled", by, account=name)
        return web.json_response(account.public())

    async def disable_user(self, request: web.Request) -> web.Response:
        return await self._set_user_enabled(request, False)

    async def enable_user(self, request: web.Request) -> web.Response:
        return await self._set_user_enabled(request, True)

    async def remove_user(self, request: web.Request) -> web.Response:
        by = principal_of(request)
        name = request.match_info["name"]
        self._not_self(by, name)
        await _off_loop(self.accounts.remove, name)
        self.sessions.end_account(name)
        self._event("user_removed", by, account=name)
        return web.Response(status=204)

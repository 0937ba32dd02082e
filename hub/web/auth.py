"""Who is asking: console sessions (cookie), Bearer tokens, or the opt-in public view.

Every route declares what it needs (``Access``); ``Auth.guard`` wraps its handler and refuses
the request before the handler runs. A request authenticated by the session cookie that
changes state must carry the session's ``X-CSRF-Token``; once TLS is set up it must also come
over https. Bearer requests need neither: a browser never adds that header on its own.

Logins: argon2id checks run in a small executor of their own (so a login flood cannot starve
the default pool that storage and the registry use), at most ``MAX_PENDING_LOGINS`` at a
time; repeated failures are throttled per account name and per peer address.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from hub.accounts import Account, Accounts, Throttle
from hub.security import (
    Identity,
    TokenClaims,
    TokenError,
    token_identity,
    verify_token,
)
from hub.topics import (
    COMMAND_FILTER,
    HEALTH_FILTER,
    REPLY_FILTER,
    STATUS_FILTER,
    TELEMETRY_FILTER,
)
from hub.web.inputs import error, json_object, text_field
from hub.web.session import COOKIE, Session, Sessions

VIEWER_SUBSCRIBE = (TELEMETRY_FILTER, STATUS_FILTER, HEALTH_FILTER, REPLY_FILTER)
OPERATOR_PUBLISH = (COMMAND_FILTER,)
MAX_PENDING_LOGINS = 8
LOGIN_WORKERS = 2
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Events = Callable[[str, dict[str, Any]], None]


class Access(enum.Enum):
    OPEN = "open"  # anyone: static files, the login page and API, /mqtt
    PAGE = "page"  # a console page: a session, else a redirect to /login
    PUBLIC_PAGE = "public_page"  # the same, or anyone when the public view is on
    USER = "user"  # a session or a Bearer token (the handler checks the scope)
    PUBLIC_USER = "public_user"  # the same, or anyone (as a viewer) with the public view
    SESSION = "session"  # a console session only
    ADMIN = "admin"  # an admin session or an admin token


def role_claims(role: str, expires: float) -> TokenClaims:
    """The MQTT scope of a role: a viewer reads the fleet, an operator also commands it, an
    admin token reads everything and hub events too."""
    if role == "admin":
        return TokenClaims(subscribe=(), admin=True, expires=expires)
    publish = OPERATOR_PUBLISH if role == "operator" else ()
    return TokenClaims(subscribe=VIEWER_SUBSCRIBE, publish=publish, expires=expires)


def token_role(claims: TokenClaims) -> str:
    """A readable label for what a token may do (its filters decide, not the label)."""
    return "admin" if claims.admin else ("operator" if claims.publish else "viewer")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    via: str  # "session", "token" or "public"
    identity: Identity
    claims: TokenClaims | None = None  # a Bearer token's own claims
    session: Session | None = None

    @property
    def event_identity(self) -> str:
        return "account" if self.via == "session" else self.via


PRINCIPAL_KEY = "hub_principal"


def principal_of(request: web.Request) -> Principal:
    """The principal the guard admitted (routes other than OPEN have one)."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise error(web.HTTPUnauthorized, "log in, or send Authorization: Bearer <token>")
    return principal


class Auth:
    def __init__(
        self,
        key: bytes,
        accounts: Accounts,
        sessions: Sessions,
        events: Events,
        *,
        public_view: bool = False,
        tls_port: int | None = None,
    ) -> None:
        self.key = key
        self.accounts = accounts
        self.sessions = sessions
        self.events = events
        self.public_view = public_view
        self.tls_port = tls_port
        self.throttle = Throttle()
        self._executor = ThreadPoolExecutor(LOGIN_WORKERS, thread_name_prefix="hub-login")
        self._pending = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the guard -------------------------------------------------------------------------
    def guard(self, access: Access, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if access is not Access.OPEN:
                request[PRINCIPAL_KEY] = await self._admit(request, access)
            return await handler(request)

        return guarded

    async def _admit(self, request: web.Request, access: Access) -> Principal:
        page = access in (Access.PAGE, Access.PUBLIC_PAGE)
        if page and self.tls_port is not None and not request.secure:
            raise web.HTTPTemporaryRedirect(self.https_url(request))
        header = request.headers.get("Authorization")
        principal: Principal | None
        if header is not None and not page and access is not Access.SESSION:
            principal = self._bearer(header)
        else:
            principal = await self.session_principal(request)
            if (
                principal is None
                and self.public_view
                and access
                in (
                    Access.PUBLIC_PAGE,
                    Access.PUBLIC_USER,
                )
            ):
                principal = _public()
            if principal is None:
                if page:
                    raise web.HTTPSeeOther(f"/login?next={quote(request.path, safe='/')}")
                raise error(web.HTTPUnauthorized, "log in, or send Authorization: Bearer <token>")
            if principal.session is not None and request.method not in SAFE_METHODS:
                self.check_state_change(request, principal.session)
        if access is Access.ADMIN and not principal.identity.admin:
            raise error(web.HTTPForbidden, "only an admin may do this")
        return principal

    def check_state_change(self, request: web.Request, session: Session) -> None:
        """A cookie-authenticated change: over https once TLS is set up, with the CSRF token."""
        if self.tls_port is not None and not request.secure:
            raise error(web.HTTPForbidden, "use the https console to change anything")
        if not session.csrf_matches(request.headers.get("X-CSRF-Token")):
            raise error(web.HTTPForbidden, "missing or wrong X-CSRF-Token header")

    def _bearer(self, header: str) -> Principal:
        if not header.startswith("Bearer "):
            raise error(web.HTTPUnauthorized, "send Authorization: Bearer <token>")
        try:
            claims = verify_token(self.key, header[len("Bearer ") :].strip())
        except TokenError as exc:
            raise error(web.HTTPUnauthorized, str(exc)) from None
        identity = token_identity(claims)
        return Principal(identity.name, token_role(claims), "token", identity, claims=claims)

    async def session_principal(self, request: web.Request) -> Principal | None:
        """The principal of the request's session cookie, if it is live and its account still
        exists and is enabled (the role comes from the account, so changes apply at once)."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        account = await asyncio.to_thread(self.accounts.get, session.name)
        if account is None or not account.enabled:
            self.sessions.end_account(session.name)
            return None
        if account.password_changed_at > session.created:  # a new password logs others out
            self.sessions.end(request.cookies.get(COOKIE))
            return None
        session.role = account.role
        return Principal(
            account.name, account.role, "session", _role_identity(account), session=session
        )

    def https_url(self, request: web.Request) -> str:
        host = request.url.host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = "" if self.tls_port == 443 else f":{self.tls_port}"
        return f"https://{host}{port}{request.rel_url}"

    # --- login, logout, session ------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        if self.tls_port is not None and not request.secure:
            raise error(web.HTTPForbidden, f"log in over https: {self.https_url(request)}")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise error(web.HTTPForbidden, "a login from another site is refused")
        body = await json_object(request)
        name = text_field(body, "name", 64)
        password = text_field(body, "password", 1024)
        peer = request.remote or "unknown"
        keys = (f"name:{name}", f"addr:{peer}")
        wait = max(self.throttle.retry_after(k) for k in keys)
        if wait > 0:
            self._failure(name, peer, "throttled")
            raise _too_many(f"too many failed logins: try again in {math.ceil(wait)} s", wait)
        if self._pending >= MAX_PENDING_LOGINS:
            self._failure(name, peer, "busy")
            raise _too_many("too many logins at once: try again in a second", 1)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            account = await loop.run_in_executor(
                self._executor, self.accounts.verify, name, password
            )
        finally:
            self._pending -= 1
        if account is None:
            for key in keys:
                self.throttle.failed(key)
            self._failure(name, peer, "wrong name or password")
            raise error(web.HTTPUnauthorized, "wrong name or password")
        self.throttle.succeeded(keys[0])
        cookie, session = self.sessions.create(account.name, account.role)
        self.events("login", {"identity": "account", "name": account.name, "peer": peer})
        response = web.json_response(
            {"name": account.name, "role": account.role, "csrf": session.csrf}
        )
        response.set_cookie(
            COOKIE, cookie, path="/", httponly=True, samesite="Strict", secure=request.secure
        )
        return response

    def _failure(self, name: str, peer: str, reason: str) -> None:
        self.events(
            "login_failure",
            {"identity": "account", "name": name[:64], "peer": peer, "reason": reason},
        )

    async def logout(self, request: web.Request) -> web.Response:
        principal = await self.session_principal(request)
        if principal is not None and principal.session is not None:
            self.check_state_change(request, principal.session)
            self.events("logout", {"identity": "account", "name": principal.name})
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/", secure=request.secure, samesite="Strict")
        return response

    async def session_info(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        session = principal.session
        assert session is not None
        sessions = self.sessions
        return web.json_response(
            {
                "name": principal.name,
                "role": principal.role,
                "csrf": session.csrf,
                "expires": int(session.expires(sessions.max_s)),
                "idle_expires": int(session.idle_expires(sessions.idle_s, sessions.max_s)),
            }
        )

    def token_for(self, principal: Principal, ttl: float) -> TokenClaims:
        """The claims of a short-lived MQTT token for this principal: its role's scope, or a
        Bearer token's own (never more than the caller has, never beyond its expiry)."""
        expires = time.time() + ttl
        if principal.claims is not None:
            own = principal.claims
            return TokenClaims(own.subscribe, own.publish, own.admin, min(expires, own.expires))
        return role_claims(principal.role, expires)


def _too_many(message: str, wait: float) -> web.HTTPException:
    retry = max(1, math.ceil(wait))
    exc = error(web.HTTPTooManyRequests, message, retry_after=retry)
    exc.headers["Retry-After"] = str(retry)
    return exc


def _role_identity(account: Account) -> Identity:
    scope = token_identity(role_claims(account.role, 0))
    return Identity("account", account.name, scope.publish, scope.subscribe, scope.admin)


def _public() -> Principal:
    scope = token_identity(role_claims("viewer", 0))
    identity = Identity("public", "public", scope.publish, scope.subscribe)
    return Principal("public", "viewer", "public", identity)

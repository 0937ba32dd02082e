"""A console user's HTTP client against a real hub: aiohttp, cookies handled by hand so that
tests see exactly what the hub sets (flags included) and send exactly what a browser would."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp

from tests.support.hubproc import HubProcess, scaled

PASSWORD = "correct horse battery"


@dataclass
class Reply:
    status: int
    headers: Any  # multidict of the response's headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error"])


def https_context(hub: HubProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=hub.data_dir / "certs" / "ca.pem")


@dataclass
class Console:
    """One browser: a base URL, its session cookie and the session's CSRF token."""

    base: str
    ssl_context: ssl.SSLContext | None = None
    cookie: str | None = None
    csrf: str | None = None
    set_cookie: list[str] = field(default_factory=list)  # Set-Cookie headers seen last

    @classmethod
    def http(cls, hub: HubProcess) -> Console:
        return cls(hub.http_url)

    @classmethod
    def https(cls, hub: HubProcess) -> Console:
        assert hub.wss_port is not None
        return cls(f"https://localhost:{hub.wss_port}", https_context(hub))

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
        token: str | None = None,
        cookie: bool = True,
    ) -> Reply:
        """Sends a request as this browser (its cookie, and its CSRF token unless told not
        to), or with a Bearer token; redirects are not followed."""
        sent = dict(headers or {})
        if cookie and self.cookie:
            sent["Cookie"] = f"hub_session={self.cookie}"
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            sent.setdefault("X-CSRF-Token", self.csrf)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        timeout = aiohttp.ClientTimeout(total=scaled(30))
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as http,
            http.request(
                method,
                self.base + path,
                data=data,
                headers=sent,
                allow_redirects=False,
                ssl=self.ssl_context if self.ssl_context is not None else False,
            ) as response,
        ):
            self.set_cookie = response.headers.getall("Set-Cookie", [])
            return Reply(response.status, response.headers, await response.read())

    async def login(self, name: str, password: str = PASSWORD) -> Reply:
        reply = await self.request("POST", "/api/login", {"name": name, "password": password})
        if reply.status == 200:
            cookie = SimpleCookie()
            for header in self.set_cookie:
                cookie.load(header)
            self.cookie = cookie["hub_session"].value
            self.csrf = reply.json()["csrf"]
        return reply

"""CONNECT checks against the hub's own gatekeeper (hub/security.py): devices from the
registry, holders of valid tokens and, in development mode, anyone.

Tokens and device secrets (a keyed hash, hub/device_secrets.py) are checked on the event loop;
a secret an older hub hashed with scrypt is checked once in a one-thread executor of its own
(so a flood of such logins never takes the default pool that storage uses) and then rehashed.
After ``login_failures`` failed logins within a minute from one address, or for one user name,
further attempts from it are refused for a minute without being checked. The caller reports
how a login ended (``record``), so one that an extension plugin admitted is no failure.

Device secrets are checked against the registry's credentials in memory: once per pass of the
event loop (the first CONNECT of the pass) the registry's access counter is read, and when it
moved the registry is read per CONNECT while a fresh copy loads in the login's thread
(hub/registry.py). A reconnect storm of thousands of CONNECTs reads the registry a few times.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from hub.broker.throttle import Failures
from hub.security import TOKEN_USERNAME, Gatekeeper, Verdict

log = logging.getLogger(__name__)

LOAD_RETRY_S = 5.0  # a failed load of the registry's credentials is tried again after this
THROTTLED = Verdict(
    None, "auth_failure", "too many failed logins: try again later", bad_credentials=True
)


class Login:
    """The hub's verdict on a CONNECT, with the failed-login throttle."""

    def __init__(self, gatekeeper: Gatekeeper, login_failures: int) -> None:
        self.gatekeeper = gatekeeper
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hub-auth")
        self._by_address = Failures(login_failures)
        self._by_name = Failures(login_failures)
        self._checked = False  # the registry's access counter was read in this pass
        self._loading: asyncio.Future[int] | None = None  # credentials loading in the thread
        self._load_after = 0.0  # after a failed load, the next waits LOAD_RETRY_S

    @staticmethod
    def _name(username: str | None) -> str:
        return f"user:{username}" if username is not None else ""

    def throttled(self, address: str, username: str | None) -> bool:
        name = self._name(username)
        return self._by_address.blocked(address) or bool(name and self._by_name.blocked(name))

    async def check(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None,
    ) -> Verdict:
        """The gatekeeper's verdict; ``peer_cert`` is the client certificate the TLS
        handshake verified, if one was presented."""
        args = (username, password, client_id, tls, peer_cert)
        # Tokens and keyed secret hashes are checked here, on the loop (microseconds); a
        # secret an older hub hashed with scrypt once, in a thread of its own.
        verdict = self.check_now(*args)
        if verdict is None:
            verdict = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._check, *args
            )
            assert verdict is not None  # the full check always decides
        return verdict

    def check_now(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None,
    ) -> Verdict | None:
        """``check`` without waiting: the verdict, or None when only scrypt can decide."""
        if not self._checked:
            self._check_registry()
        return self._check(username, password, client_id, tls, peer_cert, fast=True)

    def _check_registry(self) -> None:
        """Once per pass: is the registry's copy in memory current? If not, load it again."""
        registry = self.gatekeeper.registry
        if registry is None:
            return
        self._checked = True
        loop = asyncio.get_running_loop()
        loop.call_soon(self._next_pass)
        try:
            stale = registry.access_changed()
        except sqlite3.Error as exc:  # each check reads the registry meanwhile, and says so
            log.warning("cannot read the registry's access counter: %s", exc)
            return
        if stale and self._loading is None and loop.time() >= self._load_after:
            self._loading = loop.run_in_executor(self._executor, registry.load_credentials)
            self._loading.add_done_callback(self._loaded)

    def _next_pass(self) -> None:
        self._checked = False

    def _loaded(self, done: asyncio.Future[int]) -> None:
        self._loading = None
        self._checked = False  # read the counter again: it may have moved meanwhile
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            self._load_after = asyncio.get_running_loop().time() + LOAD_RETRY_S
            log.warning("cannot load the registry's credentials: %s", exc)
        else:
            log.debug("registry credentials loaded: %d devices", done.result())

    def record(self, address: str, username: str | None, verdict: Verdict) -> None:
        """Counts a login that ended refused for bad credentials against the throttle."""
        if verdict.identity is None and verdict.bad_credentials:
            self._by_address.failed(address)
            name = self._name(username)
            if name:
                self._by_name.failed(name)

    def is_device(self, client_id: str) -> bool:
        """True when the client id is a registered device's."""
        registry = self.gatekeeper.registry
        return registry is not None and registry.get(client_id) is not None

    def _check(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None,
        fast: bool = False,
    ) -> Verdict | None:
        """The gatekeeper's verdict (with ``fast``: None when only scrypt can decide); a token
        may not take a registered device's client id (that would disconnect the device and
        pass for it)."""
        gate = self.gatekeeper
        args = (username, password, client_id, tls, peer_cert)
        verdict = gate.authenticate_fast(*args) if fast else gate.authenticate(*args)
        if (
            verdict is not None
            and username == TOKEN_USERNAME
            and verdict.identity is not None
            and self.is_device(client_id)
        ):
            return Verdict(None, "auth_failure", f"client id {client_id!r} is a device's")
        return verdict

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

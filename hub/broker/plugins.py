"""amqtt plugins of the hub, referenced by dotted path in the broker config.

The gatekeeper plugins put the hub's security policy (hub/security.py) behind amqtt's plugin
interface: authentication at CONNECT, and topic filtering for every publish and subscribe.

Tokens and device secrets (a keyed hash, hub/device_secrets.py) are checked on the event loop;
a secret an older hub hashed with scrypt is checked once in a one-thread executor of its own
(so a flood of such logins never takes the default pool that storage uses) and then rehashed.
After ``login_failures`` failed logins within a minute from one address, or for one user name,
further attempts from it are refused for a minute without being checked.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from hub.broker.throttle import Failures
from hub.registry import Registry
from hub.security import TOKEN_USERNAME, Gatekeeper, Identity, Verdict, load_key

log = logging.getLogger(__name__)


class GatekeeperAuthPlugin(BaseAuthPlugin):
    """Admits devices from the registry and holders of valid tokens (and, in development mode,
    anyone). Unlike amqtt's AnonymousAuthPlugin it never marks clients anonymous, so their
    persistent sessions are kept. The verdict is left on the session for the broker's events.
    """

    @dataclass
    class Config:
        data_dir: str = "data"
        allow_anonymous: bool = False
        login_failures: int = 10  # per address and per user name a minute; 0: no limit

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        data_dir = Path(self.config.data_dir)
        self.registry = Registry(data_dir)
        self.gatekeeper = Gatekeeper(
            self.registry, load_key(data_dir), allow_anonymous=self.config.allow_anonymous
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hub-auth")
        self._by_address = Failures(self.config.login_failures)
        self._by_name = Failures(self.config.login_failures)

    async def authenticate(self, *, session: Session) -> bool:
        address = str(session.remote_address)
        name = f"user:{session.username}" if session.username is not None else ""
        verdict: Verdict | None
        if self._by_address.blocked(address) or (name and self._by_name.blocked(name)):
            verdict = Verdict(None, "auth_failure", "too many failed logins: try again later",
                              bad_credentials=True)  # fmt: skip
        else:
            secret = session.password
            raw = secret.encode(errors="surrogateescape") if isinstance(secret, str) else secret
            tls = session.ssl_object
            # The client certificate, if one was presented: the handshake verified it already.
            peer_cert = tls.getpeercert(binary_form=True) if tls is not None else None
            args = (session.username, raw, session.client_id, tls is not None, peer_cert or None)
            # Tokens and keyed secret hashes are checked here, on the loop (microseconds); a
            # secret an older hub hashed with scrypt once, in a thread of its own.
            verdict = self._check(*args, fast=True)
            if verdict is None:
                verdict = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._check, *args
                )
                assert verdict is not None  # the full check always decides
            if verdict.bad_credentials:
                self._by_address.failed(address)
                if name:
                    self._by_name.failed(name)
        assert verdict is not None
        session.verdict = verdict  # type: ignore[attr-defined]
        session.identity = verdict.identity  # type: ignore[attr-defined]
        return verdict.identity is not None

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
            and self.registry.get(client_id) is not None
        ):
            return Verdict(None, "auth_failure", f"client id {client_id!r} is a device's")
        return verdict

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.registry.close()


class GatekeeperTopicPlugin(BaseTopicPlugin):
    """Allows a publish or subscribe only within the identity's topic filters.

    ``allows`` answers synchronously: the broker core calls it directly on every publish
    instead of going through amqtt's plugin manager, which creates a task per plugin per call
    (hub/broker/core.py, ``BrokerCore.may_now``). ``topic_filtering`` is the same rule behind
    amqtt's interface.
    """

    @dataclass
    class Config:
        pass

    def allows(self, session: object, topic: str, action: Action) -> bool:
        identity: Identity | None = getattr(session, "identity", None)
        if identity is None:
            return False
        if action == Action.PUBLISH:
            return identity.may_publish(topic)
        if action == Action.SUBSCRIBE:
            return identity.may_subscribe(topic)
        return True  # RECEIVE: subscriptions were checked when they were made

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None,
        action: Action | None = None,
    ) -> bool:  # fmt: skip
        if topic is None or action is None:
            return False
        return self.allows(session, topic, action)

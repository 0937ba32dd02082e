"""amqtt plugins of the hub, referenced by dotted path in the broker config.

The gatekeeper plugins put the hub's security policy (hub/security.py) behind amqtt's plugin
interface: authentication at CONNECT, and topic filtering for every publish and subscribe.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from hub.registry import Registry
from hub.security import Gatekeeper, Identity, Verdict, load_key

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

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        data_dir = Path(self.config.data_dir)
        self.registry = Registry(data_dir)
        self.gatekeeper = Gatekeeper(
            self.registry, load_key(data_dir), allow_anonymous=self.config.allow_anonymous
        )

    async def authenticate(self, *, session: Session) -> bool:
        password = session.password
        raw = password.encode(errors="surrogateescape") if isinstance(password, str) else password
        tls = session.ssl_object
        # The client certificate, if one was presented: the handshake verified it already.
        peer_cert = tls.getpeercert(binary_form=True) if tls is not None else None
        # Secret checks hash with scrypt: off the event loop.
        verdict: Verdict = await asyncio.get_running_loop().run_in_executor(
            None,
            self.gatekeeper.authenticate,
            session.username,
            raw,
            session.client_id,
            tls is not None,
            peer_cert or None,
        )
        session.verdict = verdict  # type: ignore[attr-defined]
        session.identity = verdict.identity  # type: ignore[attr-defined]
        return verdict.identity is not None

    async def close(self) -> None:
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

"""Users' amqtt plugins: the hub's extension point for authentication and topic checks.

``hub serve --amqtt-plugin NAME=JSON`` (``HubConfig.amqtt_plugins``) lists amqtt plugins by
dotted path with their config, for example amqtt's own HTTP, JWT or LDAP plugins in
``amqtt.contrib``. amqtt's plugin manager loads them (it validates each config against the
plugin's ``Config`` dataclass) and the hub calls them through its public interface
(``map_plugin_auth``, ``map_plugin_topic``), after its own registry and rules:

- A CONNECT the hub's gatekeeper refuses for its credentials (not a throttled address, not a
  TLS policy refusal, never a registered device's client id) is offered to the authentication
  plugins; amqtt's rule decides: at least one plugin answers, and every answer is yes.
- Such a client (identity kind ``plugin``) publishes and subscribes only where the topic
  plugins allow it, by the same rule; without a topic plugin it may do nothing. Devices and
  tokens are never sent to plugins: their topic rules stay synchronous and cached.

An amqtt ``Session`` is made only for a CONNECT offered to plugins, and kept (what the topic
plugins read) only for the clients they admit.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

log = logging.getLogger(__name__)

PUBLISH = Action.PUBLISH
SUBSCRIBE = Action.SUBSCRIBE


def _decides(answers: dict[Any, Any] | None) -> bool:
    """amqtt's rule: at least one plugin answered (not None), and every answer is yes."""
    results = [r for r in (answers or {}).values() if r is not None]
    return bool(results) and all(bool(r) for r in results)


class Extensions:
    """The users' amqtt authentication and topic plugins, through amqtt's plugin manager."""

    def __init__(self, manager: PluginManager[Any] | None) -> None:
        self._manager = manager
        plugins = manager.plugins if manager is not None else []
        self.auth = any(isinstance(p, BaseAuthPlugin) for p in plugins)
        self.topics = any(isinstance(p, BaseTopicPlugin) for p in plugins)

    async def authenticate(
        self,
        client_id: str,
        username: str | None,
        password: bytes | None,
        peer: tuple[str, int],
        ssl_object: ssl.SSLObject | None,
    ) -> Session | None:
        """The amqtt session of a client the authentication plugins admit, else None."""
        if self._manager is None or not self.auth:
            return None
        session = Session()
        session.client_id = client_id
        session.username = username
        session.password = password.decode(errors="surrogateescape") if password else None
        session.remote_address, session.remote_port = peer
        session.ssl_object = ssl_object
        try:
            answers = await self._manager.map_plugin_auth(session=session)
        except Exception:  # a plugin's failure refuses the client, never breaks the broker
            log.exception("an amqtt authentication plugin failed")
            return None
        session.password = None  # no secret outlives the check
        return session if _decides(answers) else None

    async def allows(self, session: Session, topic: str, action: Action) -> bool:
        """The topic plugins' verdict for a client they admitted (False without one)."""
        if self._manager is None or not self.topics:
            return False
        try:
            answers = await self._manager.map_plugin_topic(
                session=session, topic=topic, action=action
            )
        except Exception:
            log.exception("an amqtt topic plugin failed")
            return False
        return _decides(answers)

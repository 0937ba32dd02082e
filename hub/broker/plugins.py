"""amqtt plugins of the hub, referenced by dotted path in the broker config."""

from __future__ import annotations

import logging

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)


class OpenAccessAuthPlugin(BaseAuthPlugin):
    """Admits every client (development mode) without marking it anonymous.

    amqtt's own AnonymousAuthPlugin sets ``session.is_anonymous`` on every client it admits,
    and amqtt then throws away the persistent sessions of anonymous clients.
    """

    async def authenticate(self, *, session: Session) -> bool:
        return True

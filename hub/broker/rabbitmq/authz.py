"""The answers to RabbitMQ's HTTP auth backend (rabbitmq_auth_backend_http), from the hub's own
gatekeeper: who may log in (the registry's devices, tokens), and where they may publish and
subscribe (the identity's topic rules, hub/security.py). No rule is written twice here.

The backend asks four questions: ``user`` (username, password, client_id) at login, ``vhost``,
``resource`` (the MQTT plugin's subscription queues and ``amq.topic``) and ``topic`` (a routing
key: the MQTT topic with `/` as `.`). Logins are answered from a short cache (a reconnect storm
is no auth storm) and throttled like the embedded broker's; each refusal is a hub event,
repeated ones about one client summarised per 10 s. The hub's own RabbitMQ user is denied here
so that the nodes' internal backend, next in their list, admits it with its own permissions.

A publish's topic is also put to ``topic_check``: what the hub's publish check
(hub/devicepolicy.py) decides from a topic alone, the backend seeing no payload: a sensor's
name and the sensors per device. RabbitMQ asks once per topic and connection, which is when a
sensor is new. A refusal denies the topic (RabbitMQ then closes the connection) with the
embedded broker's event (``malformed``, ``quota_exceeded`` with its ``quota``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hub.broker.login import Login
from hub.broker.rabbitmq.keys import mqtt_topic
from hub.broker.settings import Refusal
from hub.broker.throttle import Throttle
from hub.security import Identity

log = logging.getLogger(__name__)

ALLOW = "allow"
DENY = "deny"
MAX_CACHED = 100_000  # answers and identities remembered; the oldest are forgotten first
Report = Callable[[str, dict[str, Any]], None]
TopicCheck = Callable[[str], Refusal | None]


class Authorizer:
    def __init__(
        self,
        login: Login,
        report: Report,
        *,
        hub_user: str,
        vhost: str = "/",
        ttl: float = 2.0,
        topic_check: TopicCheck | None = None,
    ) -> None:
        self.login = login
        self.topic_check = topic_check
        self.report = report
        self.hub_user = hub_user
        self.vhost_name = vhost
        self.ttl = ttl
        self._answers: OrderedDict[tuple[str, str, str], tuple[float, str]] = OrderedDict()
        # (username, client id) -> the identity its last admitted login got.
        self.identities: OrderedDict[tuple[str, str], Identity] = OrderedDict()
        self._throttle: Throttle[tuple[str, str, str]] = Throttle()
        self.asked = 0  # questions answered without the cache (for tests and stats)

    def forget_answers(self) -> None:
        """Drops the cached logins: the registry changed (a device disabled, rotated, removed)."""
        self._answers.clear()

    async def user(self, username: str, password: str, client_id: str) -> str:
        """May this client log in? ``allow`` or ``deny``."""
        if username == self.hub_user:
            return DENY  # the internal backend decides the hub's own user
        digest = hashlib.sha256(password.encode("utf-8", "replace")).hexdigest()
        key = (username, digest, client_id)
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        self.asked += 1
        address = f"client:{client_id}"
        if self.login.throttled(address, username):
            verdict = None
            reason, event = "too many failed logins: try again later", "auth_failure"
        else:
            result = await self.login.check(username, password.encode(), client_id, False, None)
            self.login.record(address, username, result)
            verdict, reason, event = result.identity, result.reason, result.event
        if verdict is None:
            self._refused(event or "auth_failure", client_id, username, reason)
            answer = DENY
        else:
            self._remember(self.identities, (username, client_id), verdict)
            answer = ALLOW
        self._remember(self._answers, key, (now + self.ttl, answer))
        return answer

    def vhost(self, username: str, vhost: str, client_id: str) -> str:
        if vhost != self.vhost_name or self.identity(username, client_id) is None:
            return DENY
        return ALLOW

    def resource(
        self,
        username: str,
        vhost: str,
        resource: str,
        name: str,
        permission: str,
        client_id: str,
    ) -> str:
        """The MQTT plugin's own resources: the client's subscription queues, and reading and
        writing (never configuring) ``amq.topic``. Topics themselves are checked by ``topic``."""
        if vhost != self.vhost_name or self.identity(username, client_id) is None:
            return DENY
        if (
            resource == "queue"
            and client_id
            and name
            in (f"mqtt-subscription-{client_id}qos0", f"mqtt-subscription-{client_id}qos1")
        ):
            return ALLOW
        if resource == "exchange" and name == "amq.topic" and permission in ("read", "write"):
            return ALLOW
        return DENY

    def topic(
        self,
        username: str,
        vhost: str,
        name: str,
        permission: str,
        routing_key: str,
        client_id: str,
    ) -> str:
        """A publish (``write``) to, or a subscription (``read``) to, an MQTT topic."""
        identity = self.identity(username, client_id)
        if vhost != self.vhost_name or name != "amq.topic" or identity is None:
            return DENY
        topic = mqtt_topic(routing_key)
        if permission == "write":
            if identity.may_publish(topic) and not topic.startswith("$"):
                refusal = self.topic_check(topic) if self.topic_check is not None else None
                if refusal is None:
                    return ALLOW
                extra: dict[str, Any] = {"device": refusal.device}
                if refusal.quota:
                    extra["quota"] = refusal.quota
                self._refused(refusal.event, client_id, username, refusal.detail, identity, extra)
                return DENY
            self._refused(
                "filter_violation",
                client_id,
                username,
                f"publish to {topic[:200]!r} outside its rules",
                identity,
            )
            return DENY
        if permission == "read":
            if identity.may_subscribe(topic):
                return ALLOW
            self._refused(
                "filter_violation",
                client_id,
                username,
                f"subscription to {topic[:200]!r} outside its rules",
                identity,
            )
            return DENY
        return DENY

    def identity(self, username: str, client_id: str) -> Identity | None:
        return self.identities.get((username, client_id))

    def _refused(
        self,
        kind: str,
        client_id: str,
        username: str,
        reason: str,
        identity: Identity | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        held = self._throttle.allow((client_id, kind, reason[:80]))  # one per reason per 10 s
        if held is None:
            return
        log.warning("cluster client %r: %s: %s", client_id[:64], kind, reason)
        event: dict[str, Any] = {
            "kind": kind,
            "client_id": client_id[:256],
            "identity": identity.kind if identity is not None else None,
            "name": identity.name if identity is not None else username[:256],
            "network": "cluster",
            "peer": None,
            "detail": reason,
            **(extra or {}),
        }
        if held:
            event["suppressed"] = held
        self.report(kind, event)

    @staticmethod
    def _remember(table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > MAX_CACHED:
            table.popitem(last=False)

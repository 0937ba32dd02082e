"""Cluster mode's settings: where the nodes are and who the hub is on them (from HubConfig)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hub.config import ConfigError, HubConfig

USER_ENV = "MPY_HUB_RABBITMQ_USER"
PASSWORD_ENV = "MPY_HUB_RABBITMQ_PASSWORD"

# RabbitMQ 3.10 keeps an MQTT client's QoS 1 subscription in a durable classic queue, clean
# session or not, on the node it connected to: once that node crashes, the queue can be neither
# declared nor deleted elsewhere, and the client's SUBSCRIBE closes its connection on every
# other node until the node is back. Mirroring those queues on a second node lets a client
# that fails over subscribe again at once (a mirror is promoted). It doubles a node's CPU per
# CONNECT and SUBSCRIBE (BENCHMARKS.md, "Cluster mode"), so only QoS 1 subscriptions' queues
# (`...qos1`: the devices' commands) are mirrored; a clean session's QoS 0 subscription (a
# browser's) is a transient queue, which RabbitMQ drops with its node.
SUBSCRIPTION_POLICY = "mpy-hub-mqtt-subscriptions"
SUBSCRIPTION_POLICY_BODY = {
    "pattern": "^mqtt-subscription-.*qos1$",
    "apply-to": "queues",
    "priority": 0,
    "definition": {"ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic"},
}


@dataclass(frozen=True)
class RabbitSettings:
    amqp_urls: tuple[str, ...]
    mgmt_urls: tuple[str, ...]
    vhost: str = "/"
    user: str = "hub"
    password: str = field(default="", repr=False)
    ingest_queue: str = "hub.readings"  # durable quorum queue the hubs consume together
    dead_letters: str = "hub.dead"  # exchange and queue for what cannot be stored
    prefetch: int = 2000  # unacknowledged readings a hub holds at once
    node_lost_grace: float = 10.0  # seconds a dead node's devices have to reconnect elsewhere
    node_poll: float = 1.0  # seconds between node-health checks
    auth_cache_s: float = 2.0  # seconds an auth backend answer is reused
    ws_path: str = "/ws"  # the nodes' Web MQTT path (web_mqtt.ws_path, RabbitMQ's default)
    max_queued: int = 1000  # messages waiting in one MQTT session's queue (the oldest go)
    max_queued_bytes: int = 8 * 1024 * 1024  # and their bytes

    @classmethod
    def from_config(cls, config: HubConfig) -> RabbitSettings:
        user, password = load_credentials(config.rabbitmq_credentials)

        def urls(text: str | None) -> tuple[str, ...]:
            return tuple(u.strip().rstrip("/") for u in (text or "").split(",") if u.strip())

        return cls(
            urls(config.rabbitmq_amqp),
            urls(config.rabbitmq_mgmt),
            config.rabbitmq_vhost,
            user,
            password,
            max_queued=config.max_queued,
            max_queued_bytes=config.max_queued_bytes,
        )


def load_credentials(path: Path | None) -> tuple[str, str]:
    """The hub's RabbitMQ user and password: from a JSON file ({"user", "password"}, the local
    cluster's credentials.json has that shape) or from the environment."""
    if path is None:
        user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
        if not user or not password:
            raise ConfigError(
                f"rabbitmq_credentials is unset and {USER_ENV} / {PASSWORD_ENV} are not both "
                "set: the hub needs its RabbitMQ user"
            )
        return user, password
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"rabbitmq_credentials: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"rabbitmq_credentials: {path} is not JSON") from None
    found = data if isinstance(data, dict) else {}
    name, secret = found.get("user"), found.get("password")
    if not isinstance(name, str) or not name or not isinstance(secret, str) or not secret:
        raise ConfigError(
            f'rabbitmq_credentials: {path} must hold a "user" and a "password" (strings)'
        )
    return name, secret

"""Cluster mode: the broker seam over a RabbitMQ cluster (README, "Cluster mode").

aio-pika is the AMQP 0-9-1 client (amqp.py); the management API closes connections and
reports node health (mgmt.py); the event exchange feeds presence (presence.py); the nodes'
HTTP auth backend is answered from the hub's gatekeeper (authz.py).
"""

from typing import TYPE_CHECKING, Any

from hub.broker.rabbitmq.authz import Authorizer
from hub.broker.rabbitmq.settings import RabbitSettings

if TYPE_CHECKING:
    from hub.broker.rabbitmq.broker import RabbitBroker


def __getattr__(name: str) -> Any:
    """RabbitBroker (and aio-pika with it) is imported on first use, by a cluster-mode hub."""
    if name == "RabbitBroker":
        from hub.broker.rabbitmq.broker import RabbitBroker

        return RabbitBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Authorizer", "RabbitBroker", "RabbitSettings"]

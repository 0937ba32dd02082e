"""Cluster mode: the broker seam over a RabbitMQ cluster (README, "Cluster mode").

aio-pika is the AMQP 0-9-1 client (amqp.py); the management API closes connections and
reports node health (mgmt.py); the event exchange feeds presence (presence.py); the nodes'
HTTP auth backend is answered from the hub's gatekeeper (authz.py).
"""

from hub.broker.rabbitmq.authz import Authorizer
from hub.broker.rabbitmq.broker import RabbitBroker
from hub.broker.rabbitmq.settings import RabbitSettings

__all__ = ["Authorizer", "RabbitBroker", "RabbitSettings"]

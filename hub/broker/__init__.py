"""The one seam between the hub and its MQTT broker.

The rest of the hub, the tests and the bench use :class:`Broker` (hub/broker/seam.py) and the
names below, nothing else from this package (tests/hub/test_imports.py checks). The broker
knows no device-topic grammar (that is hub/topics.py); the hub hands it its gatekeeper, its
publish check and its listeners.

:class:`EmbeddedBroker` implements the protocol with the hub's own MQTT core (codec, topic
trie, sessions, connections: amqtt's session and delivery engine is replaced, see core.py).
What it keeps of amqtt, and why:

- ``amqtt.broker.Broker``: the lifecycle that loads the users' plugins and sends them its
  start and shutdown events; ``internal_message_broadcast`` is routed into the hub's core, so
  a plugin that publishes (through amqtt's broker context) reaches subscribers (embedded.py).
- ``amqtt.plugins.manager.PluginManager`` (``plugins``, ``map_plugin_auth``,
  ``map_plugin_topic``): the hub's extension point, users' authentication and topic plugins
  such as amqtt.contrib's HTTP, JWT or LDAP ones, run after the hub's registry and rules
  (extensions.py, ``HubConfig.amqtt_plugins``).
- ``amqtt.session.Session``, ``amqtt.contexts.Action``, ``BaseAuthPlugin``,
  ``BaseTopicPlugin``: what those plugins take and are recognised by; a Session is made only
  for a CONNECT offered to them (extensions.py).

The hub's own logins (hub/broker/login.py) and topic rules (``Identity`` in hub/security.py)
are called directly: synchronous, and cached per connection for publishes.

:class:`RabbitBroker` (hub/broker/rabbitmq/) implements the same protocol over a RabbitMQ
cluster (cluster mode); :class:`Authorizer` answers the nodes' HTTP auth backend from the
hub's gatekeeper.
"""

from typing import TYPE_CHECKING, Any

from hub.broker.embedded import EmbeddedBroker
from hub.broker.rabbitmq.authz import Authorizer
from hub.broker.rabbitmq.settings import (
    SUBSCRIPTION_POLICY,
    SUBSCRIPTION_POLICY_BODY,
    RabbitSettings,
)
from hub.broker.reporting import EventSink
from hub.broker.seam import Broker, MessageListener
from hub.broker.settings import BrokerSettings, PublishCheck, Refusal
from hub.broker.statestore import BrokerStateError, open_broker_state

if TYPE_CHECKING:
    from hub.broker.rabbitmq.broker import RabbitBroker


def __getattr__(name: str) -> Any:
    """RabbitBroker is imported on first use: its AMQP client (aio-pika) costs an embedded hub
    a fifth of a second at every start."""
    if name == "RabbitBroker":
        from hub.broker.rabbitmq.broker import RabbitBroker

        return RabbitBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUBSCRIPTION_POLICY",
    "SUBSCRIPTION_POLICY_BODY",
    "Authorizer",
    "Broker",
    "BrokerSettings",
    "BrokerStateError",
    "EmbeddedBroker",
    "EventSink",
    "MessageListener",
    "PublishCheck",
    "RabbitBroker",
    "RabbitSettings",
    "Refusal",
    "open_broker_state",
]

"""The one seam between the hub and its MQTT broker.

Everything amqtt-specific (its config format, adapters, plugins and every workaround for its
behaviour) lives in this package. The rest of the hub talks to :class:`EmbeddedBroker` only.
"""

from hub.broker.core import BrokerSettings, PublishCheck, Refusal
from hub.broker.embedded import EmbeddedBroker

__all__ = ["BrokerSettings", "EmbeddedBroker", "PublishCheck", "Refusal"]

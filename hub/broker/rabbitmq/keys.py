"""MQTT topics and filters as RabbitMQ routing keys, and back (its MQTT plugin maps `/` to `.`
and `+` to `*` on `amq.topic`; a `.` inside an MQTT topic therefore becomes a level)."""

from __future__ import annotations


def routing_key(topic: str) -> str:
    """An MQTT topic (or filter) as the routing key the MQTT plugin uses."""
    return ".".join("*" if level == "+" else level for level in topic.split("/"))


def mqtt_topic(key: str) -> str:
    """A routing key (or binding pattern) as the MQTT topic (or filter) it stands for."""
    return "/".join("+" if level == "*" else level for level in key.split("."))

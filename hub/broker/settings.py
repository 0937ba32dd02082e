"""The broker's settings (derived from the hub's config) and its publish-check hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from hub.config import ConfigError


class Refusal(NamedTuple):
    """Why the publish check refused a message: it is acknowledged, not routed, not retained."""

    event: str  # the hub event: "malformed" or "quota_exceeded"
    detail: str
    device: str | None = None  # the device the message was about
    quota: str | None = None  # for quota_exceeded: which quota


# (identity, topic, payload, retain) -> a refusal or None; the hub supplies it (device policy).
PublishCheck = Callable[[object, str, bytes, bool], Refusal | None]


@dataclass(frozen=True)
class BrokerSettings:
    max_payload: int = 256 * 1024
    max_inflight: int = 20
    max_queued: int = 1000
    max_qos: int = 2
    connect_timeout: float = 10.0
    keepalive_sweep: float = 0.25
    rate_limit: float = 0.0  # messages a second per client; 0 is no limit
    # Quotas (README, "Broker behaviour and limits").
    max_queued_bytes: int = 8 * 1024 * 1024  # per session, topics and payloads
    max_buffered: int = 256 * 1024  # bytes in one connection's write buffer before queueing
    slow_consumer: str = "drop"  # full queue of a connected client: "drop" QoS 0, "disconnect"
    max_retained_per_client: int = 100
    max_retained_bytes_per_client: int = 1024 * 1024
    max_retained_bytes: int = 64 * 1024 * 1024  # the whole hub
    max_filters_per_subscribe: int = 8
    max_subscriptions: int = 400  # per session: a console page of 100 devices takes 301
    max_sessions_per_identity: int = 10  # persistent sessions; the oldest offline one goes
    max_connect: int = 64 * 1024  # bytes of a CONNECT packet (before login)
    login_failures: int = 10  # per address and per identity a minute, then refused a minute
    # Durable state (hub/broker/journal.py): seconds an offline persistent session and a
    # retained message are kept; 0 keeps them for ever.
    session_expiry: float = 7 * 86400.0
    retained_expiry: float = 0.0

    def __post_init__(self) -> None:
        """Quotas a user set wrong fail at start, naming the setting."""
        at_least = {
            "max_queued_bytes": 1024,
            "max_buffered": 1024,
            "max_retained_per_client": 0,
            "max_retained_bytes_per_client": 0,
            "max_retained_bytes": 0,
            "max_filters_per_subscribe": 1,
            "max_subscriptions": 1,
            "max_connect": 128,
            "max_sessions_per_identity": 1,
            "login_failures": 0,
        }
        for name, least in at_least.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"{name} must be a whole number of at least {least}, not {value!r}"
                )
        for name in ("session_expiry", "retained_expiry"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(
                    f"{name} must be 0 (for ever) or a number of seconds, not {value!r}"
                )
        if self.slow_consumer not in ("drop", "disconnect"):
            raise ConfigError(
                f"slow_consumer must be 'drop' or 'disconnect', not {self.slow_consumer!r}"
            )

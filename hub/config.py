"""The hub's typed configuration: one frozen dataclass, validated when it is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value a user gave is wrong; the message names the key."""


def _check_port(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be a port number from 0 to 65535, not {value}")


@dataclass(frozen=True)
class HubConfig:
    """Where the hub listens and keeps its data.

    Port 0 picks a free port; the hub reports the real one. ``http_port`` None serves the
    HTTP pages on the WebSocket network's port.
    """

    host: str = "127.0.0.1"
    mqtt_port: int = 1883
    ws_port: int = 8080
    http_port: int | None = None
    mqtts_port: int = 8883
    wss_port: int = 8443
    data_dir: Path = Path("data")
    max_payload: int = 256 * 1024
    max_queued: int = 1000
    max_inflight: int = 20
    rate_limit: float = 50.0
    retention_days: float = 30.0
    store_url: str | None = None  # None: SQLite in the data dir; or postgresql://...
    allow_anonymous: bool = False
    # Broker quotas (README, "Broker behaviour and limits"); checked by hub.broker's
    # BrokerSettings and hub.devicepolicy when the hub starts.
    max_queued_bytes: int = 8 * 1024 * 1024
    max_buffered: int = 256 * 1024
    slow_consumer: str = "drop"  # or "disconnect"
    max_retained_per_client: int = 100
    max_retained_bytes_per_client: int = 1024 * 1024
    max_retained_bytes: int = 64 * 1024 * 1024
    max_filters_per_subscribe: int = 8
    max_subscriptions: int = 50
    max_sessions_per_identity: int = 10
    max_connect: int = 64 * 1024
    login_failures: int = 10
    max_sensors: int = 32
    max_sensor_name: int = 16

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 1 <= self.max_payload <= 64 * 1024 * 1024:
            raise ConfigError(f"max_payload must be 1 byte to 64 MiB, not {self.max_payload}")
        if self.max_queued < 1:
            raise ConfigError(f"max_queued must be at least 1, not {self.max_queued}")
        if self.retention_days < 0:
            raise ConfigError(
                f"retention_days must be 0 (keep all) or positive, not {self.retention_days}"
            )
        if self.rate_limit < 0:
            raise ConfigError(f"rate_limit must be 0 (off) or positive, not {self.rate_limit}")
        if not 1 <= self.max_inflight <= 65535:
            raise ConfigError(f"max_inflight must be from 1 to 65535, not {self.max_inflight}")
        _check_port("mqtt_port", self.mqtt_port)
        _check_port("ws_port", self.ws_port)
        _check_port("http_port", self.http_port)
        _check_port("mqtts_port", self.mqtts_port)
        _check_port("wss_port", self.wss_port)

    @property
    def http_shares_ws_port(self) -> bool:
        return self.http_port is None or (self.http_port == self.ws_port != 0)

"""The hub's typed configuration: one frozen dataclass, validated when it is built."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.ingest import parse_disk_threshold

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value a user gave is wrong; the message names the key."""


def _check_port(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be a port number from 0 to 65535, not {value}")


def check_amqtt_plugins(plugins: object) -> None:
    """amqtt_plugins maps a plugin's dotted path (module.Class) to its config (an object)."""
    if not isinstance(plugins, dict):
        raise ConfigError("amqtt_plugins must map plugin paths to their config")
    for name, config in plugins.items():
        module, _, cls = name.rpartition(".") if isinstance(name, str) else ("", "", "")
        if (
            not module
            or not cls.isidentifier()
            or not all(part.isidentifier() for part in module.split("."))
        ):
            raise ConfigError(f"amqtt_plugins: {name!r} is not a dotted path (module.Class)")
        if not isinstance(config, dict):
            raise ConfigError(f"amqtt_plugins: {name}'s config must be an object")


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
    public_view: bool = False  # the read-only console without a login (opt-in)
    session_idle_s: float = 30 * 60  # a console session ends after this long unused
    session_max_s: float = 12 * 3600  # and this long after its login, used or not
    # Storage durability and HTTP limits (README: "Acknowledged means stored", "HTTP limits").
    store_queue: int = 100_000  # readings waiting for a commit; past it they are not acked
    store_sync: str = "full"  # SQLite: "full" (on disk when acknowledged) or "normal"
    disk_low: str = "5%"  # a disk_low event when the data dir's free space is below this
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_idle_timeout: float = 60.0
    http_max_body: int = 1024 * 1024
    http_max_per_address: int = 64
    http_max_connections: int = 0  # 0: a quarter of the open-file limit
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
    # Users' amqtt plugins (dotted path -> its config), run after the hub's own registry and
    # rules (README, "amqtt plugins"; hub/broker/extensions.py).
    amqtt_plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        if not 1 <= self.session_idle_s <= self.session_max_s <= 30 * 86400:
            raise ConfigError(
                "session_idle_s and session_max_s must be 1 s to 30 days, idle at most max, "
                f"not {self.session_idle_s} and {self.session_max_s}"
            )
        _check_port("mqtt_port", self.mqtt_port)
        _check_port("ws_port", self.ws_port)
        _check_port("http_port", self.http_port)
        _check_port("mqtts_port", self.mqtts_port)
        _check_port("wss_port", self.wss_port)
        if self.store_sync not in ("full", "normal"):
            raise ConfigError(f"store_sync must be full or normal, not {self.store_sync!r}")
        if self.store_queue < 1:
            raise ConfigError(f"store_queue must be at least 1, not {self.store_queue}")
        try:
            parse_disk_threshold(self.disk_low)
        except ValueError as exc:
            raise ConfigError(f"disk_low: {exc}") from None
        for name in ("http_header_timeout", "http_body_timeout", "http_idle_timeout",
                     "http_max_body", "http_max_per_address"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.http_max_connections < 0:
            raise ConfigError("http_max_connections must be 0 (auto) or positive")
        check_amqtt_plugins(self.amqtt_plugins)

    @property
    def http_shares_ws_port(self) -> bool:
        return self.http_port is None or (self.http_port == self.ws_port != 0)


class DataDirError(ConfigError):
    """The data dir is missing (and may not be created) or is not a folder."""


def prepare_data_dir(data_dir: Path, *, create: bool = True) -> None:
    """Makes sure the data dir exists and is its owner's only (0700): it holds the hub's
    secrets. A new one is created 0700; an existing one that others may read or enter is
    tightened to 0700, with a warning."""
    if not data_dir.exists():
        if not create:
            raise DataDirError(f"data dir {data_dir} does not exist")
        data_dir.mkdir(mode=0o700, parents=True)
        os.chmod(data_dir, 0o700)  # mkdir's mode is masked by the umask
        return
    if not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is not a folder")
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(data_dir, mode & 0o700)
        except OSError as exc:
            log.warning("data dir %s is open to others (%o) and cannot be tightened: %s",
                        data_dir, mode, exc)  # fmt: skip
        else:
            log.warning("data dir %s was open to others (%o): tightened to %o",
                        data_dir, mode, mode & 0o700)  # fmt: skip


def create_private_file(path: Path) -> None:
    """Creates an empty file readable by its owner only, unless it exists; an existing one
    is made owner-only, with the -wal and -shm files SQLite keeps beside a database (SQLite
    creates those with the database file's mode)."""
    if not path.exists():
        # Never open and close an existing database here: closing any descriptor of a file
        # drops every POSIX lock this process holds on it, SQLite's included.
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for one in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(one.stat().st_mode) & 0o077:
                os.chmod(one, 0o600)

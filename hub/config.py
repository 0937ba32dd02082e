"""The hub's typed configuration: one frozen dataclass, validated when it is built.

HubConfig is the one source of every `hub serve` setting and its default: the command-line
flags (hub/serveflags.py) and the configuration file (hub/configfile.py) are generated from
its fields, and the broker's settings are built from it (hub.server.broker_settings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Settings SIGHUP applies to a running hub; every other one needs a restart.
RELOADABLE = frozenset({"log_level", "routes"})


class ConfigError(ValueError):
    """A configuration value a user gave is wrong; the message names the key."""


def _check_port(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be a port number from 0 to 65535, not {value}")


def parse_disk_threshold(text: str) -> tuple[float, int]:
    """``5%`` or ``100MB`` (KB, MB, GB, or plain bytes) -> (fraction, bytes); one is 0."""
    value = text.strip().upper()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent < 100:
                raise ValueError
            return percent / 100, 0
        for unit, scale in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3), ("B", 1)):
            if value.endswith(unit):
                size = int(float(value[: -len(unit)]) * scale)
                break
        else:
            size = int(value)
        if size < 0:
            raise ValueError
        return 0.0, size
    except (ValueError, OverflowError):
        raise ValueError(f"not a disk threshold: {text!r} (say 5% or 100MB)") from None


def _setting(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    flag: str | None = None,
    group: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A HubConfig field with what its flag needs: help text, metavar, a flag name when it is
    not `--field-name`, the help group, choices."""
    meta = {"help": help, "metavar": metavar, "flag": flag, "group": group, "choices": choices}
    return field(default=default, metadata=meta)


_DATA_DIR = Path("data")
_LIMITS = "broker limits (see README)"
_DURABLE = "storage durability and HTTP limits (see README)"
_CONSOLE = "console (see README)"
_INTEG = "integrations (see README)"
_CLUSTER = "cluster mode (see README)"


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


def _urls(name: str, text: str | None, schemes: tuple[str, ...]) -> list[str]:
    urls = [u.strip() for u in (text or "").split(",") if u.strip()]
    if not urls:
        raise ConfigError(f"{name} must list at least one URL when broker is rabbitmq")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name}: {url!r} is not a {' or '.join(schemes)} URL")
        if parts.username or parts.password:
            raise ConfigError(f"{name}: {url!r} holds credentials: use rabbitmq_credentials")
    return urls


def check_cluster(config: HubConfig) -> None:
    """The cluster-mode settings: required, and well formed, once broker is rabbitmq."""
    if config.broker not in ("embedded", "rabbitmq"):
        raise ConfigError(f"broker must be embedded or rabbitmq, not {config.broker!r}")
    _check_port("auth_http_port", config.auth_http_port)
    if config.broker != "rabbitmq":
        return
    _urls("rabbitmq_amqp", config.rabbitmq_amqp, ("amqp", "amqps"))
    _urls("rabbitmq_mgmt", config.rabbitmq_mgmt, ("http", "https"))
    if not config.rabbitmq_vhost:
        raise ConfigError("rabbitmq_vhost must not be empty")
    if not config.auth_http_host:
        raise ConfigError("auth_http_host must not be empty")


@dataclass(frozen=True)
class HubConfig:
    """Where the hub listens and keeps its data.

    Port 0 picks a free port; the hub reports the real one. ``http_port`` None serves the
    HTTP pages on the WebSocket network's port.
    """

    host: str = _setting("127.0.0.1", "address to listen on", metavar="ADDRESS")
    mqtt_port: int = _setting(1883, "MQTT over TCP (0: free)", metavar="PORT")
    ws_port: int = _setting(8080, "MQTT over WebSocket (0: free)", metavar="PORT")
    http_port: int | None = _setting(None, "dashboard pages (unset: the ws port)", metavar="PORT")
    mqtts_port: int = _setting(
        8883, "MQTT over TLS, once `hub certs init` has run (0: free)", metavar="PORT"
    )
    wss_port: int = _setting(
        8443, "MQTT over secure WebSocket (443 in production; 0: free)", metavar="PORT"
    )
    data_dir: Path = _setting(_DATA_DIR, "hub state folder", metavar="DIR")  # noqa: RUF009
    log_level: str = _setting(
        "WARNING", "DEBUG, INFO, WARNING, ERROR (SIGHUP reloads it)", metavar="LEVEL"
    )
    max_payload: int = _setting(
        256 * 1024,
        "largest PUBLISH payload; a larger one closes the connection",
        metavar="BYTES",
        group=_LIMITS,
    )
    max_queued: int = _setting(
        1000,
        "messages queued per session before the overflow policy applies",
        metavar="N",
        group=_LIMITS,
    )
    max_inflight: int = _setting(
        20, "unacknowledged QoS 1/2 messages per session", metavar="N", group=_LIMITS
    )
    rate_limit: float = _setting(
        50.0, "publishes a second per client (0: no limit)", metavar="PER_S", group=_LIMITS
    )
    # Broker quotas (README, "Broker behaviour and limits"); checked by hub.broker's
    # BrokerSettings and hub.devicepolicy when the hub starts.
    max_queued_bytes: int = _setting(
        8 * 1024 * 1024, "bytes queued per session", metavar="BYTES", group=_LIMITS
    )
    max_buffered: int = _setting(
        256 * 1024,
        "bytes in one connection's write buffer before messages queue",
        metavar="BYTES",
        group=_LIMITS,
    )
    slow_consumer: str = _setting(
        "drop",
        "a connected client whose queue is full: drop QoS 0 or disconnect it",
        group=_LIMITS,
        choices=("drop", "disconnect"),
    )
    max_retained_per_client: int = _setting(
        100, "retained messages per client", metavar="N", group=_LIMITS
    )
    max_retained_bytes_per_client: int = _setting(
        1024 * 1024, "retained bytes per client", metavar="BYTES", group=_LIMITS
    )
    max_retained_bytes: int = _setting(
        64 * 1024 * 1024, "retained bytes in all", metavar="BYTES", group=_LIMITS
    )
    max_filters_per_subscribe: int = _setting(
        8, "filters granted per SUBSCRIBE", metavar="N", group=_LIMITS
    )
    max_subscriptions: int = _setting(
        400,
        "subscriptions per session (a console page of 100 devices takes 301)",
        metavar="N",
        group=_LIMITS,
    )
    max_sessions_per_identity: int = _setting(
        10,
        "persistent sessions per device, token or client; the oldest offline one is dropped",
        metavar="N",
        group=_LIMITS,
    )
    max_connect: int = _setting(
        64 * 1024, "largest CONNECT packet", metavar="BYTES", group=_LIMITS
    )
    login_failures: int = _setting(
        10,
        "failed logins per address or user name a minute before logins from it are "
        "refused for a minute (0: no limit)",
        metavar="N",
        group=_LIMITS,
    )
    # Durable broker state (README, "Broker behaviour and limits"): kept in broker.sqlite3 in
    # the data dir (or the --store PostgreSQL database), checked by hub.broker's BrokerSettings.
    session_expiry: float = _setting(
        7 * 86400.0,
        "seconds an offline persistent MQTT session (its subscriptions and queued "
        "messages) is kept (0: for ever)",
        metavar="SECONDS",
        group=_LIMITS,
    )
    retained_expiry: float = _setting(
        0.0,
        "seconds a retained message is kept after it was published (0: for ever)",
        metavar="SECONDS",
        group=_LIMITS,
    )
    max_sensors: int = _setting(32, "sensors per device", metavar="N", group=_LIMITS)
    max_sensor_name: int = _setting(
        16, "characters of a sensor name, at most 16", metavar="N", group=_LIMITS
    )
    # Users' amqtt plugins (dotted path -> its config), run after the hub's own registry and
    # rules (README, "amqtt plugins"; hub/broker/extensions.py). In the file, a table:
    # [amqtt_plugins."amqtt.contrib.http.UserAuthHttpPlugin"] with the plugin's keys.
    amqtt_plugins: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "an amqtt authentication or topic plugin run after the hub's own checks: "
            "its dotted path and JSON config, or @FILE holding the JSON (repeatable)",
            "metavar": "NAME=JSON",
            "flag": "--amqtt-plugin",
            "group": None,
            "choices": None,
        },
    )
    store_url: str | None = _setting(
        None,
        "telemetry database: unset for SQLite in the data dir, or postgresql://...",
        metavar="URL",
        flag="--store",
    )
    retention_days: float = _setting(30.0, "keep readings this long (0: forever)", metavar="DAYS")
    # Storage durability and HTTP limits (README: "Acknowledged means stored", "HTTP limits").
    store_queue: int = _setting(
        100_000,
        "readings waiting for a commit before new ones go unacknowledged",
        metavar="N",
        group=_DURABLE,
    )
    store_sync: str = _setting(
        "full",
        "SQLite: full (a reading is on disk when acknowledged) or normal (no fsync "
        "per commit: survives a crash of the hub, not a power loss)",
        group=_DURABLE,
        choices=("full", "normal"),
    )
    disk_low: str = _setting(
        "5%",
        "a disk_low hub event when the data dir's free space is below this",
        metavar="5%|100MB",
        group=_DURABLE,
    )
    http_header_timeout: float = _setting(
        10.0, "seconds to send a request's headers", metavar="S", group=_DURABLE
    )
    http_body_timeout: float = _setting(
        30.0, "seconds to send a request's body", metavar="S", group=_DURABLE
    )
    http_idle_timeout: float = _setting(
        60.0, "seconds a keep-alive connection may idle", metavar="S", group=_DURABLE
    )
    http_max_body: int = _setting(
        1024 * 1024,
        "largest HTTP request body; a larger one gets 413",
        metavar="BYTES",
        group=_DURABLE,
    )
    http_max_per_address: int = _setting(
        64, "HTTP/WebSocket connections at once from one address", metavar="N", group=_DURABLE
    )
    http_max_connections: int = _setting(
        0,
        "HTTP/WebSocket connections at once (0: a quarter of the open-file limit)",
        metavar="N",
        group=_DURABLE,
    )
    allow_anonymous: bool = _setting(
        False, "DEVELOPMENT ONLY: admit clients without credentials, full access"
    )
    public_view: bool = _setting(
        False,
        "show the read-only console (fleet, telemetry, health) without a login",
        group=_CONSOLE,
    )
    session_idle_s: float = _setting(
        30 * 60.0,
        "a console session ends after this long unused",
        metavar="SECONDS",
        flag="--session-idle",
        group=_CONSOLE,
    )
    session_max_s: float = _setting(
        12 * 3600.0,
        "and this long after its login, used or not",
        metavar="SECONDS",
        flag="--session-max",
        group=_CONSOLE,
    )
    # Integrations (README: "Metrics", "Routes", "Home Assistant"); routes come from the
    # file's [[routes]] tables only (hub/routes/spec.py checks them).
    metrics_public: bool = _setting(
        False, "serve /metrics to anyone (default: an admin token or session)", group=_INTEG
    )
    hass_discovery: bool = _setting(
        False,
        "publish Home Assistant MQTT discovery documents for registered devices",
        group=_INTEG,
    )
    hass_prefix: str = _setting(
        "homeassistant", "Home Assistant's discovery prefix", metavar="PREFIX", group=_INTEG
    )
    routes: tuple[Any, ...] = field(
        default=(),
        metadata={
            "help": "routes ([[routes]] tables; only in the config file)",
            "flag": False,
            "metavar": None,
            "group": _INTEG,
            "choices": None,
        },
    )
    # Cluster mode (README, "Cluster mode"): devices and browsers connect to a RabbitMQ
    # cluster; the hub consumes it over AMQP and answers its HTTP auth backend.
    broker: str = _setting(
        "embedded",
        "embedded: the hub's own MQTT broker; rabbitmq: a RabbitMQ cluster (the "
        "hub binds no MQTT port)",
        group=_CLUSTER,
        choices=("embedded", "rabbitmq"),
    )
    rabbitmq_amqp: str | None = _setting(
        None,
        "the nodes' AMQP URLs, comma-separated (amqp://HOST:PORT, no credentials)",
        metavar="URLS",
        group=_CLUSTER,
    )
    rabbitmq_mgmt: str | None = _setting(
        None,
        "the nodes' management API URLs, comma-separated (http://HOST:PORT)",
        metavar="URLS",
        group=_CLUSTER,
    )
    rabbitmq_vhost: str = _setting(
        "/", "the cluster's virtual host", metavar="VHOST", group=_CLUSTER
    )
    rabbitmq_credentials: Path | None = _setting(  # noqa: RUF009
        None,
        'a JSON file with the hub\'s RabbitMQ user and password ({"user", '
        '"password"}); unset: the environment\'s MPY_HUB_RABBITMQ_USER and '
        "MPY_HUB_RABBITMQ_PASSWORD",
        metavar="FILE",
        group=_CLUSTER,
    )
    auth_http_host: str = _setting(
        "127.0.0.1",
        "address of the listener RabbitMQ's HTTP auth backend asks (only the "
        "cluster should reach it)",
        metavar="ADDRESS",
        group=_CLUSTER,
    )
    auth_http_port: int = _setting(
        8082, "port of that listener (0: free)", metavar="PORT", group=_CLUSTER
    )
    auth_http_allow: str = _setting(
        "",
        "comma-separated addresses besides loopback that may call the auth listener "
        "(the nodes' own)",
        metavar="ADDRESSES",
        group=_CLUSTER,
    )

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        check_amqtt_plugins(self.amqtt_plugins)
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
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
        for name in (
            "http_header_timeout",
            "http_body_timeout",
            "http_idle_timeout",
            "http_max_body",
            "http_max_per_address",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.http_max_connections < 0:
            raise ConfigError("http_max_connections must be 0 (auto) or positive")
        from hub.routes.spec import parse_routes  # it imports ConfigError from here

        object.__setattr__(self, "routes", parse_routes(self.routes))
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.hass_prefix):
            raise ConfigError(
                f"hass_prefix must be topic levels of A-Z a-z 0-9 _ -, not "
                f"{self.hass_prefix[:40]!r}"
            )
        check_cluster(self)

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
            log.warning(
                "data dir %s is open to others (%o) and cannot be tightened: %s",
                data_dir,
                mode,
                exc,
            )
        else:
            log.warning(
                "data dir %s was open to others (%o): tightened to %o",
                data_dir,
                mode,
                mode & 0o700,
            )


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

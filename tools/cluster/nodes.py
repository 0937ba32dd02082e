"""One RabbitMQ node of the local cluster: its ports, folders, environment and config files.

Everything a node reads lives under the cluster's folder: nothing comes from /etc/rabbitmq or
the `rabbitmq` user's HOME, and every node and CLI call talks to the cluster's own epmd.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HOST = "127.0.0.1"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
WS_PATH = "/ws"
MAX_MESSAGE_SIZE = 256 * 1024  # bytes of one message (max_message_size)
PLUGINS = (
    "rabbitmq_mqtt",
    "rabbitmq_web_mqtt",
    "rabbitmq_management",
    "rabbitmq_event_exchange",
    "rabbitmq_auth_backend_http",
)
# The HTTP auth backend asks one URL per kind of check: AUTH_URL/user, /vhost, /resource, /topic.
AUTH_PATHS = ("user", "vhost", "resource", "topic")
_SAFE_URL = re.compile(r"[A-Za-z0-9._~:/@%+-]+")  # no space, quote, '#' (a comment) or query


class ClusterError(Exception):
    """A cluster that cannot start or run; the message is for the user."""


@dataclass(frozen=True)
class Ports:
    amqp: int
    dist: int
    mqtt: int
    ws: int
    mgmt: int


@dataclass(frozen=True)
class Credentials:
    """The internal administrator the hub logs in with (AMQP, MQTT and the management API)."""

    user: str
    password: str

    @classmethod
    def generate(cls, user: str = "hub") -> Credentials:
        return cls(user, secrets.token_urlsafe(24))


# Ports below the kernel's ephemeral range (32768-60999 by default): a port picked by bind(0)
# can still be the local port of client connections in TIME_WAIT (a connection storm leaves
# thousands), and Erlang's check of its distribution port (a listen on every address with
# SO_REUSEADDR) then fails under gVisor, the sandbox CI runs in, with dist_port_already_used.
PORT_RANGE = (20000, 32000)


def _bindable(port: int) -> socket.socket | None:
    """A socket bound to the port on 127.0.0.1 once a listen on every address worked too."""
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("0.0.0.0", port))
            probe.listen(1)
        s = socket.socket()
        s.bind((HOST, port))
        return s
    except OSError:
        return None


def free_ports(count: int) -> list[int]:
    """Ports free right now, outside the ephemeral range (all held open together, so all
    distinct). Another process may still take one before the node binds it: the launcher
    retries then."""
    with contextlib.ExitStack() as stack:
        held: list[int] = []
        while len(held) < count:
            port = secrets.randbelow(PORT_RANGE[1] - PORT_RANGE[0]) + PORT_RANGE[0]
            if port in held or (s := _bindable(port)) is None:
                continue
            stack.enter_context(s)
            held.append(port)
        return held


def check_auth_url(url: str) -> str:
    """The base URL of the hub's auth service, refused unless it is a plain http(s) URL (it is
    written into the config file, so a newline or space could add keys)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClusterError(f"auth URL must be http(s)://HOST[:PORT]/PATH, not {url!r}")
    if not _SAFE_URL.fullmatch(url) or parts.query or parts.fragment:
        raise ClusterError(f"auth URL has characters or parts a config value cannot hold: {url!r}")
    return url.rstrip("/")


@dataclass
class Node:
    """Node `index` (1-based) of the cluster; `ports` may change while it first starts."""

    index: int
    base: Path  # the cluster's folder
    ports: Ports

    @property
    def name(self) -> str:
        return f"rabbit{self.index}@localhost"

    @property
    def folder(self) -> Path:
        return self.base / f"rabbit{self.index}"

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    @property
    def console_file(self) -> Path:
        return self.folder / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "rabbitmq.pid"

    @property
    def config_file(self) -> Path:
        return self.folder / "rabbitmq.conf"

    def environment(self, epmd_port: int) -> dict[str, str]:
        """The environment of the node's server process."""
        env = cli_environment(self.base, epmd_port)
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.ports.amqp),
            RABBITMQ_DIST_PORT=str(self.ports.dist),
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.folder / "advanced.config"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def write_config(self, admin: Credentials, auth_url: str | None, seed: str) -> None:
        """rabbitmq.conf for this node's ports. A blank node other than the seed (node 1) joins
        the seed's cluster when it boots; a blank seed creates the admin user."""
        p = self.ports
        lines = [
            f"listeners.tcp.1 = {HOST}:{p.amqp}",
            f"mqtt.listeners.tcp.1 = {HOST}:{p.mqtt}",
            "mqtt.listeners.ssl = none",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            "mqtt.durable_queue_type = quorum",
            f"web_mqtt.tcp.ip = {HOST}",
            f"web_mqtt.tcp.port = {p.ws}",
            f"web_mqtt.ws_path = {WS_PATH}",
            f"management.tcp.ip = {HOST}",
            f"management.tcp.port = {p.mgmt}",
            f"default_user = {admin.user}",
            f"default_pass = {admin.password}",
            "default_user_tags.administrator = true",
            "default_permissions.configure = .*",
            "default_permissions.read = .*",
            "default_permissions.write = .*",
            # Connections reach the management API's statistics (and so can be closed by
            # name: the hub's kick) within a second rather than five.
            "collect_statistics_interval = 1000",
            # The hub's --max-payload default (256 KiB): RabbitMQ 3.10's MQTT plugin has no
            # packet limit of its own; a larger PUBLISH closes the connection.
            f"max_message_size = {MAX_MESSAGE_SIZE}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.name != seed:
            lines.append("cluster_formation.peer_discovery_backend = classic_config")
            lines.append(f"cluster_formation.classic_config.nodes.1 = {seed}")
        if auth_url is not None:
            lines += ["auth_backends.1 = http", "auth_backends.2 = internal"]
            lines.append("auth_http.http_method = post")
            lines += [f"auth_http.{kind}_path = {auth_url}/{kind}" for kind in AUTH_PATHS]
        self.folder.mkdir(mode=0o700, exist_ok=True)
        write_private(self.config_file, "\n".join(lines) + "\n")


def cli_environment(base: Path, epmd_port: int) -> dict[str, str]:
    """The environment shared by the nodes and every rabbitmqctl call: the cluster's HOME (and
    so its Erlang cookie), its epmd, no /etc/rabbitmq, and any free port for the CLI's own
    distribution listener (0: the range default of 35672-35682 would clash between clusters)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(base / "home"),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CTL_DIST_PORT_MIN": "0",
        "RABBITMQ_CTL_DIST_PORT_MAX": "0",
    }


def prepare_base(base: Path) -> None:
    """The cluster's shared files: a private HOME with an owner-only Erlang cookie, an empty
    env file (instead of /etc/rabbitmq/rabbitmq-env.conf) and the enabled plugins."""
    home = base / "home"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        alphabet = string.ascii_uppercase
        write_private(cookie, "".join(secrets.choice(alphabet) for _ in range(32)), mode=0o400)
    write_private(base / "rabbitmq-env.conf", "")
    write_private(base / "enabled_plugins", "[" + ",".join(PLUGINS) + "].\n")


def write_ctl(base: Path, epmd_port: int, seed: str) -> Path:
    """DIR/rabbitmqctl: Debian's rabbitmqctl with the cluster's environment (node 1 unless
    `-n NODE` names another), for a person at a terminal: `DIR/rabbitmqctl cluster_status`."""
    env = {**cli_environment(base, epmd_port), "RABBITMQ_NODENAME": seed}
    del env["PATH"], env["LANG"], env["LC_ALL"]
    exports = " \\\n    ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    script = base / "rabbitmqctl"
    write_private(
        script,
        f"""#!/bin/sh
# rabbitmqctl for the local cluster in this folder (its HOME, Erlang cookie and epmd).
export {exports}
exec {shlex.quote(str(RABBITMQ_BIN / "rabbitmqctl"))} "$@"
""",
        mode=0o700,
    )
    return script


def write_credentials(path: Path, admin: Credentials, nodes: list[Node]) -> None:
    """credentials.json (owner-only): the hub's administrator and where to reach each node."""
    data = {
        "user": admin.user,
        "password": admin.password,
        "vhost": "/",
        "nodes": [
            {
                "name": n.name,
                "host": HOST,
                "amqp": n.ports.amqp,
                "mqtt": n.ports.mqtt,
                "ws": n.ports.ws,
                "ws_path": WS_PATH,
                "mgmt": n.ports.mgmt,
            }
            for n in nodes
        ],
    }
    write_private(path, json.dumps(data, indent=2) + "\n")


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Writes a file only its owner can read, created with that mode (never briefly open)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)

"""What a route is: one ``[[routes]]`` table of the config file, checked into a RouteSpec.

A route selects messages by topic filter (and optionally one device or sensor) and delivers
them to a target: ``webhook`` (HTTP POST or PUT), ``database`` (an SQL statement with bound
parameters, PostgreSQL or SQLite) or ``mqtt`` (republished under a topic template). Every
problem is a ConfigError naming the route and the key; secrets (header values read from an
environment variable or a file) are read when the route starts and never printed.
"""

from __future__ import annotations

import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub.config import ConfigError
from hub.configfile import redact_url
from hub.topics import SENSOR_RE, check_topic_filter

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")  # an HTTP token
TARGETS = ("webhook", "database", "mqtt")
PARAMS = ("topic", "payload", "device", "sensor", "value", "time")
MAX_ROUTES = 64
MAX_SECRET_BYTES = 8192
COMMON = {
    "name",
    "filter",
    "device",
    "sensor",
    "target",
    "max_attempts",
    "backoff_s",
    "backoff_max_s",
    "max_queue",
}
KEYS = {
    "webhook": COMMON
    | {
        "url",
        "method",
        "headers",
        "headers_from_env",
        "headers_from_file",
        "timeout_s",
        "concurrency",
    },
    "database": COMMON | {"database", "statement", "batch"},
    "mqtt": COMMON | {"topic", "qos", "retain"},
}


@dataclass(frozen=True)
class RouteSpec:
    name: str
    filter: str
    target: str
    device: str | None = None
    sensor: str | None = None
    max_attempts: int = 5  # delivery attempts before a message becomes a dead letter
    backoff_s: float = 0.5  # the first retry's delay; doubled each time, with jitter
    backoff_max_s: float = 30.0
    max_queue: int = 100_000  # messages waiting in the durable queue before new ones wait
    # webhook
    url: str = ""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()  # literal values (not secrets)
    headers_from_env: tuple[tuple[str, str], ...] = ()  # header -> environment variable
    headers_from_file: tuple[tuple[str, str], ...] = ()  # header -> file holding the value
    timeout_s: float = 10.0
    concurrency: int = 8  # devices delivered to at once (each device's messages in order)
    # database
    database: str = ""  # postgresql://... or sqlite:PATH (relative to the data dir)
    statement: str = ""
    batch: int = 100
    # mqtt
    topic: str = ""
    qos: int = 1
    retain: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=True, repr=False)

    def describe(self) -> dict[str, Any]:
        """The route as the API and `hub route list` show it: no secret, no password."""
        shown: dict[str, Any] = {"name": self.name, "filter": self.filter, "target": self.target}
        if self.device:
            shown["device"] = self.device
        if self.sensor:
            shown["sensor"] = self.sensor
        if self.target == "webhook":
            shown.update(
                url=redact_url(self.url),
                method=self.method,
                secret_headers=sorted(
                    h for h, _ in self.headers_from_env + self.headers_from_file
                ),
            )
        elif self.target == "database":
            shown.update(database=redact_url(self.database), statement=self.statement)
        else:
            shown.update(topic=self.topic, qos=self.qos, retain=self.retain)
        return shown


def _text(route: str, table: dict[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"routes: {route}: {key} must be a non-empty string")
    return value


def _number(
    route: str,
    table: dict[str, Any],
    key: str,
    default: float,
    low: float,
    high: float,
    *,
    whole: bool = False,
) -> Any:
    value = table.get(key, default)
    kind_ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if (
        isinstance(value, bool)
        or not kind_ok
        or not low <= value <= high
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        what = "a whole number" if whole else "a number"
        raise ConfigError(f"routes: {route}: {key} must be {what} from {low} to {high}")
    return int(value) if whole else float(value)


def _headers(route: str, table: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"routes: {route}: {key} must be a table of header = string")
    out = []
    for header, text in value.items():
        if (
            not HEADER_RE.match(header)
            or not isinstance(text, str)
            or "\n" in text
            or ("\r" in text)
        ):
            raise ConfigError(
                f"routes: {route}: {key}: {header[:64]!r} must be a header name "
                "with a one-line string"
            )
        out.append((header, text))
    return tuple(out)


def sql_params(statement: str) -> list[str]:
    """The ``$name`` parameters of a statement, in order, outside quotes and comments;
    ConfigError for an unknown one or a dollar-quoted string."""
    found = []
    for kind, text in sql_tokens(statement):
        if kind == "param":
            name = text[1:]
            if name not in PARAMS:
                raise ConfigError(
                    f"unknown parameter {text} (use {', '.join('$' + p for p in PARAMS)})"
                )
            found.append(name)
    return found


_TOKEN_RE = re.compile(
    r"(?P<quoted>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"
    r"|(?P<comment>--[^\n]*|/\*.*?\*/)"
    r"|(?P<param>\$[A-Za-z_][A-Za-z0-9_]*\$?)"
    r"|(?P<dollar>\$[0-9]+)"
    r"|(?P<other>[^'\"$/-]+|.)",
    re.S,
)


def sql_tokens(statement: str) -> list[tuple[str, str]]:
    """The statement in pieces: quoted text, comments, ``$name`` parameters, the rest."""
    out = []
    for match in _TOKEN_RE.finditer(statement):
        kind = match.lastgroup or "other"
        text = match.group()
        if kind == "param" and text.endswith("$"):
            raise ConfigError("dollar-quoted strings ($tag$...$tag$) are not supported")
        if kind == "dollar":
            raise ConfigError(
                f"positional parameters ({text}) are not supported: use $topic, $payload, ..."
            )
        if kind == "other" and text in ("'", '"'):  # no closing quote matched it
            raise ConfigError("an unterminated quote")
        out.append((kind, text))
    return out


def check_template(route: str, template: str) -> None:
    """A republish topic: fixed levels and ``{device}`` / ``{sensor}``, no wildcard, never
    into the devices' namespace (``d/``) or the hub's (``$``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"routes: {route}: topic: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in ("device", "sensor") or spec or conversion):
            raise ConfigError(f"routes: {route}: topic may use {{device}} and {{sensor}} only")
        if "+" in literal or "#" in literal or "\x00" in literal:
            raise ConfigError(f"routes: {route}: topic must not hold a wildcard")
    if template.startswith(("d/", "$")) or template in ("d", ""):
        raise ConfigError(f"routes: {route}: topic must not be under d/ (devices) or $")


def parse_route(table: object, index: int) -> RouteSpec:
    """One [[routes]] table, checked; ConfigError names the route (or its position)."""
    if not isinstance(table, dict):
        raise ConfigError(f"routes: entry {index + 1} must be a table ([[routes]])")
    name = table.get("name")
    label = name if isinstance(name, str) and NAME_RE.match(name) else f"#{index + 1}"
    if label != name:
        raise ConfigError(f"routes: {label}: name must be 1 to 32 of a-z, 0-9, '-', '_'")
    target = table.get("target")
    if target not in TARGETS:
        raise ConfigError(f"routes: {name}: target must be one of {', '.join(TARGETS)}")
    unknown = sorted(set(table) - KEYS[target])
    if unknown:
        raise ConfigError(f"routes: {name}: unknown key {unknown[0]!r} for a {target} route")
    topic_filter = _text(name, table, "filter")
    if not check_topic_filter(topic_filter) or len(topic_filter) > 256:
        raise ConfigError(f"routes: {name}: filter {topic_filter[:60]!r} is not a topic filter")
    values: dict[str, Any] = {
        "name": name,
        "filter": topic_filter,
        "target": target,
        "raw": dict(table),
    }
    if "device" in table:
        values["device"] = _text(name, table, "device")
    if "sensor" in table:
        values["sensor"] = _text(name, table, "sensor")
        if not SENSOR_RE.match(values["sensor"]):
            raise ConfigError(
                f"routes: {name}: sensor {values['sensor'][:20]!r} is not a sensor name"
            )
    values["max_attempts"] = _number(name, table, "max_attempts", 5, 1, 100, whole=True)
    values["backoff_s"] = _number(name, table, "backoff_s", 0.5, 0.001, 3600)
    values["backoff_max_s"] = _number(name, table, "backoff_max_s", 30.0, 0.001, 86400)
    values["max_queue"] = _number(name, table, "max_queue", 100_000, 1, 10_000_000, whole=True)
    if target == "webhook":
        url = _text(name, table, "url")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"routes: {name}: url must be an http:// or https:// URL")
        values["url"] = url
        method = table.get("method", "POST")
        if method not in ("POST", "PUT"):
            raise ConfigError(f"routes: {name}: method must be POST or PUT")
        values["method"] = method
        values["headers"] = _headers(name, table, "headers")
        values["headers_from_env"] = _headers(name, table, "headers_from_env")
        values["headers_from_file"] = _headers(name, table, "headers_from_file")
        values["timeout_s"] = _number(name, table, "timeout_s", 10.0, 0.01, 600)
        values["concurrency"] = _number(name, table, "concurrency", 8, 1, 256, whole=True)
    elif target == "database":
        database = _text(name, table, "database")
        if not database.startswith(("postgresql://", "postgres://", "sqlite:")):
            raise ConfigError(f"routes: {name}: database must be postgresql://... or sqlite:PATH")
        values["database"] = database
        statement = _text(name, table, "statement")
        try:
            sql_params(statement)
        except ConfigError as exc:
            raise ConfigError(f"routes: {name}: statement: {exc}") from None
        values["statement"] = statement
        values["batch"] = _number(name, table, "batch", 100, 1, 10_000, whole=True)
    else:
        template = _text(name, table, "topic")
        check_template(name, template)
        values["topic"] = template
        values["qos"] = _number(name, table, "qos", 1, 0, 1, whole=True)
        retain = table.get("retain", False)
        if not isinstance(retain, bool):
            raise ConfigError(f"routes: {name}: retain must be true or false")
        values["retain"] = retain
    return RouteSpec(**values)


def parse_routes(tables: object) -> tuple[RouteSpec, ...]:
    """Every [[routes]] table; names must differ."""
    if not isinstance(tables, list | tuple):
        raise ConfigError("routes must be [[routes]] tables")
    if len(tables) > MAX_ROUTES:
        raise ConfigError(f"routes: at most {MAX_ROUTES} routes")
    routes = tuple(
        t if isinstance(t, RouteSpec) else parse_route(t, i) for i, t in enumerate(tables)
    )
    names = [r.name for r in routes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"routes: {name}: two routes have this name")
    return routes


def secret_headers(spec: RouteSpec) -> dict[str, str]:
    """The headers a webhook sends: literal ones, then those read from the environment and
    from files (ConfigError names the header and where, never the value)."""
    out = dict(spec.headers)
    for header, variable in spec.headers_from_env:
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(
                f"routes: {spec.name}: header {header}: environment variable {variable} is not set"
            )
        out[header] = value.strip()
    for header, path in spec.headers_from_file:
        try:
            with Path(path).open("rb") as file:
                raw = file.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"routes: {spec.name}: header {header}: cannot read {path}: {exc.strerror}"
            ) from None
        if len(raw) > MAX_SECRET_BYTES:
            raise ConfigError(f"routes: {spec.name}: header {header}: {path} is too large")
        out[header] = raw.decode("utf-8", "replace").strip()
    for header, value in out.items():
        if "\n" in value or "\r" in value:
            raise ConfigError(f"routes: {spec.name}: header {header}: the value must be one line")
    return out


def selects(spec: RouteSpec, topic: str, device: str | None, sensor: str | None) -> bool:
    """Whether the route takes a message (the filter already matched)."""
    if spec.device is not None and device != spec.device:
        return False
    return spec.sensor is None or sensor == spec.sensor

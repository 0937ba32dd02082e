"""The hub's configuration file (TOML): read, checked against HubConfig, and written back.

Top-level keys are HubConfig's field names. Unknown keys, sections that do not exist yet and
values of the wrong type are errors that name the key and its line (tomllib gives no line
numbers, so the line is found by scanning the file's text).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hub.config import ConfigError, HubConfig

MAX_FILE_BYTES = 1024 * 1024


class ConfigFileError(ConfigError):
    """The configuration file is unreadable or wrong; one problem a line, each naming the key
    and its line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def field_types() -> dict[str, tuple[type, bool]]:
    """Each HubConfig field's value type and whether it may be unset (None)."""
    hints = typing.get_type_hints(HubConfig)
    out: dict[str, tuple[type, bool]] = {}
    for f in dataclasses.fields(HubConfig):
        hint = hints[f.name]
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            (inner,) = [a for a in args if a is not type(None)]
            out[f.name] = (inner, True)
        else:
            out[f.name] = (hint, False)
    return out


def _line_of(text: str, key: str, *, section: bool = False) -> int | None:
    """The first line (from 1) that sets key at the top level, or opens section [key]."""
    name = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    pattern = rf"^\s*\[\[?\s*{name}\s*[\].]" if section else rf"^\s*{name}\s*="
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(pattern, line):
            return number
    return None


def _where(path: Path, text: str, key: str, *, section: bool = False) -> str:
    line = _line_of(text, key, section=section)
    return f"{path}:{line}" if line is not None else str(path)


def _convert(key: str, value: Any, kind: type) -> Any:
    """value as kind, or a ConfigError naming the expected type."""
    names = {
        int: "a whole number",
        float: "a number",
        str: "a string",
        bool: "true or false",
        Path: "a path (a string)",
    }
    expected = names.get(kind, "a table")
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is Path and isinstance(value, str) and value:
        return Path(value)
    if typing.get_origin(kind) is dict and isinstance(value, dict):
        return value  # amqtt_plugins: HubConfig checks its shape
    if typing.get_origin(kind) is tuple and isinstance(value, list):
        return tuple(value)  # [[routes]]: HubConfig checks each (hub/routes/spec.py)
    if typing.get_origin(kind) is tuple:
        expected = "[[routes]] tables (an array of tables)"
    shown = json.dumps(value, default=str)
    raise ConfigError(f"{key} must be {expected}, not {shown[:60]}")


def parse(text: str, path: Path) -> dict[str, Any]:
    """The settings text holds, as HubConfig field values; ConfigFileError lists every
    problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"{path}: not valid TOML: {exc}"]) from None
    kinds = field_types()
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in data.items():
        if key not in kinds:
            if isinstance(value, dict):
                where = _where(path, text, key, section=True)
                problems.append(f"{where}: unknown section [{key}]")
            else:
                problems.append(f"{_where(path, text, key)}: unknown key {key!r}")
            continue
        kind, _ = kinds[key]
        try:
            values[key] = _convert(key, value, kind)
        except ConfigError as exc:
            problems.append(f"{_where(path, text, key)}: {exc}")
    if problems:
        raise ConfigFileError(problems)
    return values


def read(path: Path) -> tuple[dict[str, Any], str]:
    """The file's settings and its text; ConfigFileError when it cannot be read or is wrong."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError([f"cannot read config file {path}: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError([f"{path}: not UTF-8 text"]) from None
    return parse(text, path), text


Check = Callable[[HubConfig], object]


def build(
    file_values: dict[str, Any],
    overrides: dict[str, Any],
    path: Path | None,
    text: str,
    check: Check | None = None,
) -> HubConfig:
    """HubConfig from the file's values with the flags' on top, passed to check (which may
    raise ConfigError: the settings derived from it); a value refused is reported at the
    file's line when the file set it."""
    try:
        config = HubConfig(**{**file_values, **overrides})
        if check is not None:
            check(config)
        return config
    except ConfigError as exc:
        message = str(exc)
        key = re.match(r"\w+", message)
        if path is not None and key and key[0] == "routes" and "routes" in file_values:
            raise ConfigFileError([f"{path}:{_route_line(text, message)}: {message}"]) from None
        if path is not None and key and key[0] in file_values and key[0] not in overrides:
            raise ConfigFileError([f"{_where(path, text, key[0])}: {message}"]) from None
        raise


def _route_line(text: str, message: str) -> int:
    """The line of the [[routes]] table a route error names ("routes: NAME: ..." or
    "routes: #N: ..."), else of the first one."""
    tables = [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if re.match(r"^\s*\[\[\s*routes\s*\]\]", line)
    ]
    if not tables:
        return _line_of(text, "routes") or 1
    named = re.match(r"routes: (#?)([\w-]+):", message)
    if named and named[1] and named[2].isdigit() and int(named[2]) <= len(tables):
        return tables[int(named[2]) - 1]
    if named:
        pattern = re.compile(rf"^\s*name\s*=\s*[\"']{re.escape(named[2])}[\"']")
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.match(line):
                return max((t for t in tables if t <= number), default=number)
    return tables[0]


def load(
    path: Path | None, overrides: dict[str, Any] | None = None, check: Check | None = None
) -> HubConfig:
    """The effective config: defaults, then the file (if any), then overrides (the flags)."""
    values, text = read(path) if path is not None else ({}, "")
    return build(values, overrides or {}, path, text, check)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table (amqtt_plugins)
        items = ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A TOML basic string: JSON's escapes are TOML's, except DEL must be escaped too.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def redact_url(url: str) -> str:
    """A database URL without its password or query (libpq takes `?password=` too)."""
    parts = urlsplit(url)
    if parts.password is None and not parts.query:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username is not None:
        netloc = f"{parts.username}:REDACTED@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc, query="REDACTED" if parts.query else ""))


def render(config: HubConfig, *, comments: bool = True, secrets: bool = False) -> str:
    """config as a TOML file that reads back as the same config (with secrets=True; without,
    a password in store_url is REDACTED); unset values are comments."""
    lines = []
    for f in dataclasses.fields(HubConfig):
        value = getattr(config, f.name)
        if f.name == "routes":
            continue  # tables come after every top-level key (below)
        if f.name == "store_url" and value is not None and not secrets:
            value = redact_url(value)
        if comments:
            lines.append(f"# {f.metadata['help']}")
        if value is None:
            lines.append(f"# {f.name} = (unset)")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    for route in config.routes:  # as the file had it (secrets are read from env or files)
        lines += ["", "[[routes]]"]
        for key, value in route.raw.items():
            if key in ("database", "url") and not secrets:
                value = redact_url(value)
            lines.append(f"{_toml_value(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"

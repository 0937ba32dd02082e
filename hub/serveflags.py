"""`hub serve`'s flags, generated from HubConfig's fields: `--field-name` (or the field's
`flag`), its type, help and metavar, and the dataclass's default shown in the help.

Every flag's argparse default is SUPPRESS, so only the flags the user gave reach
`overrides()`: they override the configuration file, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from hub.config import ConfigError, HubConfig
from hub.configfile import field_types


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, not {value}")
    return value


def flag_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        mib, kib = divmod(value, 1024 * 1024)
        return f"{mib} MiB" if not kib else f"{value // 1024} KiB"
    return str(value).replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per HubConfig field, in argument groups as the fields say."""
    kinds = field_types()
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(HubConfig):
        meta = f.metadata
        if meta.get("flag") is False:  # only in the config file (routes)
            continue
        group_name = meta.get("group")
        target: Any = parser
        if group_name:
            target = groups.get(group_name) or parser.add_argument_group(group_name)
            groups[group_name] = target
        kind, _ = kinds[f.name]
        default = f.default if f.default is not dataclasses.MISSING else "none"
        text = f"{meta['help'].replace('%', '%%')} (default: {_shown(default)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if f.name == "amqtt_plugins":  # repeatable NAME=JSON, turned into the mapping below
            kwargs.update(action="append", metavar=meta["metavar"])
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = port if f.name.endswith("_port") else kind
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            elif meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        target.add_argument(flag_name(f), **kwargs)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="read settings from this TOML file (keys: the settings' names, e.g. mqtt_port); "
        "flags override it",
    )


def amqtt_plugins(values: list[str]) -> dict[str, dict[str, Any]]:
    """``--amqtt-plugin NAME=JSON`` (or ``NAME=@FILE``) flags as HubConfig.amqtt_plugins."""
    plugins: dict[str, dict[str, Any]] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep:
            raise ConfigError(f"--amqtt-plugin {value!r}: use NAME=JSON or NAME=@FILE")
        try:
            if text.startswith("@"):
                text = Path(text[1:]).read_text()
            config = json.loads(text) if text.strip() else {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--amqtt-plugin {name}: {exc}") from None
        plugins[name] = config
    return plugins


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The HubConfig values the user gave as flags."""
    given = dict(vars(args))
    if given.get("amqtt_plugins") is not None:
        given["amqtt_plugins"] = amqtt_plugins(given["amqtt_plugins"])
    return {
        f.name: given[f.name]
        for f in dataclasses.fields(HubConfig)
        if given.get(f.name) is not None
    }

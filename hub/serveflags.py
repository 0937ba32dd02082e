"""`hub serve`'s flags, generated from HubConfig's fields: `--field-name` (or the field's
`flag`), its type, help and metavar, and the dataclass's default shown in the help.

Every flag's argparse default is SUPPRESS, so only the flags the user gave reach
`overrides()`: they override the configuration file, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from hub.config import HubConfig
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
        group_name = meta.get("group")
        target: Any = parser
        if group_name:
            target = groups.get(group_name) or parser.add_argument_group(group_name)
            groups[group_name] = target
        kind, _ = kinds[f.name]
        text = f"{meta['help'].replace('%', '%%')} (default: {_shown(f.default)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = port if f.name.endswith("_port") else kind
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            elif meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        target.add_argument(flag_name(f), **kwargs)
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="read settings from this TOML file (keys: the settings' names, e.g. mqtt_port); "
        "flags override it",
    )  # fmt: skip


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The HubConfig values the user gave as flags."""
    given = vars(args)
    return {
        f.name: given[f.name]
        for f in dataclasses.fields(HubConfig)
        if given.get(f.name) is not None
    }

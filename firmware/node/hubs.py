# The `hubs` setting: a list of "HOST:PORT" texts (an IPv6 address in brackets), checked whole.
# Imported by node/config.py only when the settings have it.
from micropython import const

from node.config import ConfigError

_MAX_HUBS = const(8)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-_"  # a DNS name or an IPv4 address
_SHAPE = "setting 'hubs' must be a list of 1 to 8 \"HOST:PORT\" texts"


def parse(text):
    # "HOST:PORT" -> (host, port), or None when it is not one.
    if not isinstance(text, str) or not 3 <= len(text) <= 261:
        return None
    host, _, port = text.rpartition(":")
    chars = _NAME_CHARS
    if host[:1] == "[" and host[-1:] == "]":
        host = host[1:-1]
        chars = "0123456789abcdef:."
    if not host or not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        return None
    for c in host.lower():
        if c not in chars:
            return None
    return host, int(port)


def check(settings):
    # [(host, port), ...] from settings["hubs"], or ConfigError naming what is wrong.
    if "hub_host" in settings or "hub_port" in settings:
        raise ConfigError("give setting 'hubs' or 'hub_host'/'hub_port', not both")
    hubs = settings["hubs"]
    if not isinstance(hubs, list) or not 1 <= len(hubs) <= _MAX_HUBS:
        raise ConfigError(_SHAPE)
    out = []
    for text in hubs:
        hub = parse(text)
        if hub is None:
            raise ConfigError("%s; %s is not" % (_SHAPE, repr(text)[:40]))
        out.append(hub)
    return out

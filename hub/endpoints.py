"""The hub's ready line: the one line `hub serve` prints on stdout once it listens, naming the
addresses it really listens on (port 0 resolved), and the one parser of it (the test launcher
and the benches read it back with ``Endpoints.parse``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# An IPv6 host in brackets; the TLS networks both or neither (tests/hub/test_ready_line.py).
_ADDRESS = r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})"
_READY_RE = re.compile(
    rf"ready mqtt={_ADDRESS} ws={_ADDRESS} http={_ADDRESS}(?: mqtts={_ADDRESS} wss={_ADDRESS})?"
)


class ListenError(OSError):
    """A listening socket could not be opened (port taken, bad address)."""


class ReadyLineError(ValueError):
    """A line that is not a hub ready line (an error message, a traceback, a bad port)."""


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Endpoints:
    """The addresses the hub really listens on (port 0 resolved)."""

    mqtt: tuple[str, int]
    ws: tuple[str, int]
    http: tuple[str, int]
    mqtts: tuple[str, int] | None = None  # TLS networks, once `hub certs init` has run
    wss: tuple[str, int] | None = None

    def ready_line(self) -> str:
        line = f"ready mqtt={_format(self.mqtt)} ws={_format(self.ws)} http={_format(self.http)}"
        if self.mqtts is not None and self.wss is not None:
            line += f" mqtts={_format(self.mqtts)} wss={_format(self.wss)}"
        return line

    @classmethod
    def parse(cls, line: str) -> Endpoints:
        """The endpoints a ready line names; ReadyLineError (quoting the line) otherwise."""
        match = _READY_RE.fullmatch(line)
        if match is None:
            raise ReadyLineError(f"not a hub ready line: {line!r}")
        groups = match.groups()
        found: list[tuple[str, int] | None] = []
        for host, port in zip(groups[::2], groups[1::2], strict=True):
            if host is None:
                found.append(None)
            elif int(port) > 65535:
                raise ReadyLineError(f"bad port {port} in ready line: {line!r}")
            else:
                found.append((host.removeprefix("[").removesuffix("]"), int(port)))
        mqtt, ws, http, mqtts, wss = found
        assert mqtt is not None and ws is not None and http is not None  # the regex needs them
        return cls(mqtt, ws, http, mqtts, wss)

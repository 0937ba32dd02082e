"""Why a device did not come online, from what its firmware printed on the serial console.

The firmware (node/session.py) prints a human-readable ``link down (...)`` line when the hub
cannot be reached or refuses it, and after it, for a refused CONNECT, the stable line
``link: refused <CONNACK code>``: the tools read the latter. (Firmware from before that line
never runs here: deploy puts the current firmware on the board before it reads the console.)
"""

from __future__ import annotations

import re

from tools.hubaddr import HubAddress

REFUSED_RE = re.compile(r"^link: refused (\d+)\r?$", re.MULTILINE)
LINK_DOWN_RE = re.compile(r"link down \((.*)\), retry in")
CONNECTED_RE = re.compile(r"^connected to \S+ as ", re.MULTILINE)
CREDENTIALS_REFUSED = {4: "bad user name or password", 5: "not authorized"}  # CONNACK codes


def refused_credentials(console: str) -> int | None:
    """The CONNACK code (4 or 5) with which the hub refused the board's credentials, if any."""
    for match in REFUSED_RE.finditer(console):
        code = int(match.group(1))
        if code in CREDENTIALS_REFUSED:
            return code
    return None


def diagnose(console: str, device: str, hub: HubAddress | list[HubAddress], timeout: float) -> str:
    """One message saying why the device is not online, and what to check."""
    where = " or ".join(h.where for h in (hub if isinstance(hub, list) else [hub]))
    code = refused_credentials(console)
    if code is not None:
        why = CREDENTIALS_REFUSED[code]
        return (
            f"credentials refused: {device} reached the hub at {where}, which refused it "
            f"(CONNACK {code}, {why}). Check that the device is registered and enabled on that "
            "hub and that --data-dir is that hub's; re-run deploy to give it a fresh secret."
        )
    if "wifi down" in console:
        return f"{device} boots but cannot join Wi-Fi: check --wifi-ssid and WIFI_PASSWORD."
    down = LINK_DOWN_RE.findall(console)
    if down:
        return (
            f"{device} boots but cannot reach the hub at {where} ({down[-1]}): is the hub "
            "running, and is that address reachable from the board's network (firewall, "
            "hub listening on 127.0.0.1 only)?"
        )
    last = "\n".join(console.strip().splitlines()[-6:])
    if "Traceback" in console or "Error" in console:
        return f"the firmware on {device} stopped with an error:\n{last}"
    if last:
        return f"{device} did not come online within {timeout:.0f} s; last output:\n{last}"
    return f"{device} did not come online within {timeout:.0f} s and printed nothing after reset"

"""`mpy-hub-tools` (or `python -m tools`): the kit's command line tools.

One table, COMMANDS, holds every command as (help, add_arguments, run), as mpremote's
``_COMMANDS`` does: ``run`` does the work and returns the one line that says what it did.
``bench`` and ``cluster`` keep their own options (``mpy-hub-tools bench -h``) and are handed the
rest of the line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from hub.certs import CertError
from hub.registry import RegistryError
from tools import boards, bundle, deploy, flash, mpunix, provision, sim, vboard
from tools.errors import ToolError

PROG = "mpy-hub-tools"
HUB_HELP = (
    "where the device reaches the hub: mqtt://HOST:PORT or mqtts://HOST:PORT, or several "
    "separated by commas, tried in turn"
)


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], str]


# --- sim -------------------------------------------------------------------------------------
def _sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hub", required=True, help="mqtt://HOST:PORT of the hub (several: comma-separated)"
    )
    p.add_argument("--count", type=int, default=3, help="how many devices (default 3)")
    p.add_argument("--prefix", default="sim", help="device ids are PREFIX-001... (default sim)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--period", type=int, default=2, help="seconds between readings")
    p.add_argument("--work-dir", type=Path, default=None, help="keep device folders here")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the hub's data dir: register the devices in its registry with fresh secrets",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rotate the secrets of registered devices that do not look like this sim's",
    )


def _sim(a: argparse.Namespace) -> str:
    ran = sim.run(
        a.hub, a.count, a.seconds, a.period, a.work_dir, a.data_dir, prefix=a.prefix, force=a.force
    )
    return f"sim: stopped; {len(ran.connected)} of {a.count} device(s) connected"


# --- boards ----------------------------------------------------------------------------------
def _boards_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate every board file against its chip")
    check.add_argument("--dir", type=Path, default=boards.BOARDS_DIR, help="default: boards/")


def _boards(a: argparse.Namespace) -> str:
    results = boards.check_folder(a.dir)
    for name, _ in results:
        print(f"ok {name}")
    return f"boards: {len(results)} board file(s) ok in {a.dir}"


# --- vboard ----------------------------------------------------------------------------------
def _vboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=None, help="the board's filesystem (default: temp)")
    p.add_argument("--port-link", type=Path, default=None, help="where to put the port's path")
    p.add_argument("--host", default="127.0.0.1", help="address of the socket:// port")
    p.add_argument("--tcp-port", type=int, default=0, help="port of the socket:// port (0: free)")
    p.add_argument("--heap", default=mpunix.HEAP_SIZE, help="MicroPython heap (default 64K)")
    p.add_argument("--log", type=Path, default=None, help="append the board's output here")


def _vboard(a: argparse.Namespace) -> str:
    vboard.run(a.dir, a.port_link, a.host, a.tcp_port, a.heap, a.log)
    return "vboard: stopped"


# --- flash -----------------------------------------------------------------------------------
def _flash_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, help="a board in boards/ (chip and flash offset)")
    p.add_argument("--port", required=True, help="serial port of the board")
    p.add_argument("--firmware", type=Path, required=True, help="the MicroPython .bin image")
    p.add_argument("--baud", type=int, default=flash.DEFAULT_BAUD, help="default 460800")
    p.add_argument("--connect-attempts", type=int, default=flash.CONNECT_ATTEMPTS)


def _flash(a: argparse.Namespace) -> str:
    offset = flash.flash(a.board, a.port, a.firmware, a.baud, a.connect_attempts)
    return f"flash: MicroPython written at {hex(offset)}; next: {PROG} provision"


# --- deploy and provision --------------------------------------------------------------------
def _device_arguments(p: argparse.ArgumentParser, data_dir: Path | None) -> None:
    """What deploy and provision share, spelled the same in both."""
    p.add_argument("--board", required=True, help="a board in boards/ (or a .json file)")
    p.add_argument("--port", required=True, help="serial port, or socket://HOST:PORT")
    p.add_argument("--device", "--id", dest="device", required=True, help="the device id")
    p.add_argument("--hub", default="mqtt://127.0.0.1:1883", help=HUB_HELP)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir,
        help=f"the hub's data dir (registry, key, CA); default: {data_dir or 'none'}",
    )
    p.add_argument("--api", default=None, help="the hub's HTTP URL (default http://HOST:8080)")
    p.add_argument(
        "--token", default=None, help="API token (default: HUB_TOKEN, or made with --data-dir)"
    )
    p.add_argument("--wifi-ssid", default=None, help="Wi-Fi network (password: WIFI_PASSWORD)")
    p.add_argument(
        "--timeout",
        type=float,
        default=deploy.ONLINE_TIMEOUT_S,
        help="seconds to wait for the device online",
    )


def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    _device_arguments(p, None)
    p.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="JSON from `mpy-hub device add` instead of the registry",
    )
    p.add_argument("--no-wait", action="store_true", help="do not wait for it online")


def _deploy(a: argparse.Namespace) -> str:
    boot = deploy.deploy(
        a.board,
        a.port,
        a.device,
        a.hub,
        data_dir=a.data_dir,
        credentials_file=a.credentials,
        api_url=a.api,
        token=a.token,
        wifi_ssid=a.wifi_ssid,
        timeout=a.timeout,
        wait=not a.no_wait,
    )
    if boot is None:
        return f"deploy: {a.device} deployed on {a.port}; not waiting for it online"
    return f"deploy: {a.device} is online (boot {boot})"


def _provision_arguments(p: argparse.ArgumentParser) -> None:
    _device_arguments(p, Path("data"))
    p.add_argument(
        "--allow-insecure", action="store_true", help="register it for plain MQTT (no TLS)"
    )
    p.add_argument(
        "--cert",
        action="store_true",
        help="log in with a client certificate (mutual TLS, mqtts) instead of a secret",
    )


def _provision(a: argparse.Namespace) -> str:
    boot = provision.provision(
        a.board,
        a.port,
        a.device,
        a.hub,
        a.data_dir,
        allow_insecure=a.allow_insecure,
        api_url=a.api,
        token=a.token,
        wifi_ssid=a.wifi_ssid,
        timeout=a.timeout,
        client_cert=a.cert,
    )
    return f"provision: {a.device} is online (boot {boot})"


# --- bundle ----------------------------------------------------------------------------------
def _bundle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, help="a board in boards/ (or a .json file)")
    p.add_argument("--version", required=True, help="the app version the device will report")
    p.add_argument("--out", type=Path, required=True, help="the bundle file to write")
    p.add_argument("--source", type=Path, default=mpunix.FIRMWARE_DIR, help="default: firmware/")


def _bundle(a: argparse.Namespace) -> str:
    return bundle.build(a.board, a.version, a.out, a.source)


COMMANDS: dict[str, Command] = {
    "sim": Command("run simulated devices (real firmware, unix port)", _sim_arguments, _sim),
    "boards": Command("board files (boards/*.json)", _boards_arguments, _boards),
    "vboard": Command("a virtual MicroPython board on a serial port", _vboard_arguments, _vboard),
    "flash": Command("write MicroPython onto an ESP32 with esptool", _flash_arguments, _flash),
    "bundle": Command(
        "an app bundle for over-the-air updates (hub app add)", _bundle_arguments, _bundle
    ),
    "deploy": Command(
        "compile and copy the firmware and settings to a board, reset, wait online",
        _deploy_arguments,
        _deploy,
    ),
    "provision": Command(
        "register a device on the hub and deploy it (safe to re-run)",
        _provision_arguments,
        _provision,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="MicroPython IoT hub tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bench", help="the hub side by side with Mosquitto (make bench)")
    commands.add_parser("cluster", help="a local RabbitMQ cluster (make cluster)")
    for name, command in COMMANDS.items():
        command.add_arguments(commands.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark has its own options (mpy-hub-tools bench -h)
        from tools.bench.run import main as bench

        return bench(argv[1:])
    if argv[:1] == ["cluster"]:  # its own options too (mpy-hub-tools cluster -h)
        from tools.cluster.__main__ import main as cluster

        return cluster(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        print(COMMANDS[args.command].run(args), flush=True)
    except boards.BoardError as exc:
        for error in exc.problems:
            print(f"tools: error: {error}", file=sys.stderr)
        return 2
    except (ToolError, mpunix.UnixPortMissing, RegistryError, CertError) as exc:
        print(f"tools: error: {exc}", file=sys.stderr)
        return 2
    return 0

"""`python -m tools`: the kit's command line tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hub.certs import CertError
from hub.registry import RegistryError
from tools import boards, deploy, flash, mpunix, provision, sim, vboard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools", description="MicroPython IoT hub tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bench", help="the hub side by side with Mosquitto (make bench)")
    s = commands.add_parser("sim", help="run simulated devices (real firmware, unix port)")
    s.add_argument("--hub", required=True, help="mqtt://HOST:PORT of the hub")
    s.add_argument("--count", type=int, default=3, help="how many devices (default 3)")
    s.add_argument("--seconds", type=float, default=None, help="stop after this long")
    s.add_argument("--period", type=int, default=2, help="seconds between readings")
    s.add_argument("--work-dir", type=Path, default=None, help="keep device folders here")
    s.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the hub's data dir: provision the devices in its registry",
    )
    b = commands.add_parser("boards", help="board files (boards/*.json)")
    actions = b.add_subparsers(dest="action", required=True)
    c = actions.add_parser("check", help="validate every board file against its chip")
    c.add_argument("--dir", type=Path, default=boards.BOARDS_DIR, help="default: boards/")
    v = commands.add_parser("vboard", help="a virtual MicroPython board on a serial port")
    v.add_argument("--dir", type=Path, default=None, help="the board's filesystem (default: temp)")
    v.add_argument("--port-link", type=Path, default=None, help="where to put the port's path")
    v.add_argument("--host", default="127.0.0.1", help="address of the socket:// port")
    v.add_argument("--tcp-port", type=int, default=0, help="port of the socket:// port (0: free)")
    v.add_argument("--heap", default=mpunix.HEAP_SIZE, help="MicroPython heap (default 64K)")
    v.add_argument("--log", type=Path, default=None, help="append the board's output here")
    f = commands.add_parser("flash", help="write MicroPython onto an ESP32 with esptool")
    f.add_argument("--board", required=True, help="a board in boards/ (chip and flash offset)")
    f.add_argument("--port", required=True, help="serial port of the board")
    f.add_argument("--firmware", type=Path, required=True, help="the MicroPython .bin image")
    f.add_argument("--baud", type=int, default=flash.DEFAULT_BAUD, help="default 460800")
    f.add_argument("--connect-attempts", type=int, default=flash.CONNECT_ATTEMPTS)
    for name in ("deploy", "provision"):
        helps = {
            "deploy": "compile and copy the firmware and settings to a board, reset, wait online",
            "provision": "register a device on the hub and deploy it (safe to re-run)",
        }
        d = commands.add_parser(name, help=helps[name])
        d.add_argument("--board", required=True, help="a board in boards/ (or a .json file)")
        d.add_argument("--port", required=True, help="serial port, or socket://HOST:PORT")
        d.add_argument(
            "--device" if name == "deploy" else "--id", dest="device", required=True,
            help="the device id",
        )  # fmt: skip
        d.add_argument(
            "--hub", default="mqtt://127.0.0.1:1883",
            help="where the device reaches the hub: mqtt://HOST:PORT or mqtts://HOST:PORT",
        )  # fmt: skip
        d.add_argument(
            "--data-dir", type=Path, default=None if name == "deploy" else Path("data"),
            help="the hub's data dir (registry, key, CA); provision's default: data",
        )  # fmt: skip
        d.add_argument("--api", default=None, help="the hub's HTTP URL (default http://HOST:8080)")
        d.add_argument("--wifi-ssid", default=None, help="Wi-Fi network (password: WIFI_PASSWORD)")
        d.add_argument("--timeout", type=float, default=deploy.ONLINE_TIMEOUT_S,
                       help="seconds to wait for the device online")  # fmt: skip
        if name == "deploy":
            d.add_argument("--credentials", type=Path, default=None,
                           help="JSON from `hub device add` instead of the registry")  # fmt: skip
            d.add_argument("--token", default=None, help="API token (default: HUB_TOKEN, or made "
                           "with --data-dir)")  # fmt: skip
            d.add_argument("--no-wait", action="store_true", help="do not wait for it online")
        else:
            d.add_argument("--allow-insecure", action="store_true",
                           help="register it for plain MQTT (no TLS)")  # fmt: skip
            d.add_argument("--cert", action="store_true", help="log in with a client "
                           "certificate (mutual TLS, mqtts) instead of a secret")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark has its own options (python -m tools bench -h)
        from tools.bench.run import main as bench

        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sim":
            sim.run(args.hub, args.count, args.seconds, args.period, args.work_dir, args.data_dir)
        elif args.command == "boards":
            for name in boards.check_all(args.dir):
                print(f"ok {name}")
        elif args.command == "flash":
            flash.flash(args.board, args.port, args.firmware, args.baud, args.connect_attempts)
        elif args.command == "deploy":
            deploy.deploy(
                args.board, args.port, args.device, args.hub, data_dir=args.data_dir,
                credentials_file=args.credentials, api_url=args.api, token=args.token,
                wifi_ssid=args.wifi_ssid, timeout=args.timeout, wait=not args.no_wait,
            )  # fmt: skip
        elif args.command == "provision":
            provision.provision(
                args.board, args.port, args.device, args.hub, args.data_dir,
                allow_insecure=args.allow_insecure, api_url=args.api,
                wifi_ssid=args.wifi_ssid, timeout=args.timeout, client_cert=args.cert,
            )  # fmt: skip
        elif args.command == "vboard":
            vboard.run(args.dir, args.port_link, args.host, args.tcp_port, args.heap, args.log)
    except (
        sim.SimError,
        mpunix.UnixPortMissing,
        RegistryError,
        boards.BoardError,
        vboard.VboardError,
        deploy.DeployError,
        flash.FlashError,
        CertError,
    ) as exc:
        print(f"tools: error: {exc}", file=sys.stderr)
        return 2
    return 0

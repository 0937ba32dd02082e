"""`python -m tools`: the kit's command line tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hub.registry import RegistryError
from tools import boards, mpunix, sim, vboard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools", description="MicroPython IoT hub tools.")
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sim":
            sim.run(args.hub, args.count, args.seconds, args.period, args.work_dir, args.data_dir)
        elif args.command == "boards":
            for name in boards.check_all(args.dir):
                print(f"ok {name}")
        elif args.command == "vboard":
            vboard.run(args.dir, args.port_link, args.host, args.tcp_port, args.heap, args.log)
    except (
        sim.SimError,
        mpunix.UnixPortMissing,
        RegistryError,
        boards.BoardError,
        vboard.VboardError,
    ) as exc:
        print(f"tools: error: {exc}", file=sys.stderr)
        return 2
    return 0

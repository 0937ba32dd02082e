"""What the hub's commands share: the usage error, the --data-dir flag, tables, times."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path


class UsageError(Exception):
    """A mistake the user can fix; printed as `hub: error: ...` with exit code 2."""


def data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")


def when(epoch: float | None) -> str:
    return "never" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

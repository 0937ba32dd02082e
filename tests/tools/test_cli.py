"""`mpy-hub-tools` (tools/cli.py): the command table, flags spelled one way, one closing line,
every bad board file reported, and the packaging: console scripts, and a clear line instead of
a traceback when the project's dependencies are missing."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hubproc import scaled
from tests.tools.test_boards import DEVKITC
from tools import cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(30), cwd=ROOT)


def test_every_command_comes_from_the_table() -> None:
    """The parser offers exactly the table's commands, plus bench and cluster, with help."""
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(action.choices) == ["bench", "cluster", *cli.COMMANDS]
    assert set(cli.COMMANDS) == {
        "sim",
        "boards",
        "vboard",
        "flash",
        "deploy",
        "provision",
        "bundle",
    }
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    for name, command in cli.COMMANDS.items():
        assert helps[name] == command.help and command.help


@pytest.mark.parametrize("command", ["deploy", "provision"])
@pytest.mark.parametrize("flag", ["--device", "--id"])
def test_device_flag_and_its_id_alias(command: str, flag: str) -> None:
    """deploy and provision both take --device, and --id as its alias."""
    args = cli.build_parser().parse_args(
        [command, "--board", "unix-sim", "--port", "/dev/null", flag, "dev-1"]
    )
    assert args.device == "dev-1"


def test_boards_check_reports_every_bad_file(tmp_path: Path) -> None:
    """Two bad board files beside a good one: one error line each, then exit code 2."""
    bad_pin = dict(DEVKITC, pins=dict(DEVKITC["pins"], dht=6))
    (tmp_path / "esp32-devkitc.json").write_text(json.dumps(bad_pin))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "unix-sim.json").write_text((cli.boards.BOARDS_DIR / "unix-sim.json").read_text())
    result = run(sys.executable, "-m", "tools", "boards", "check", "--dir", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "tools: error: broken.json: not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))",
        "tools: error: esp32-devkitc.json: pins.dht: GPIO6 is wired to the SPI flash/PSRAM",
    ]
    assert "ok" not in result.stdout  # nothing claims success


def test_success_ends_with_one_line_saying_what_was_done() -> None:
    """A command that worked closes with one line saying what it did."""
    result = run(str(BIN / "mpy-hub-tools"), "boards", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "boards: 3 board file(s) ok in " + str(
        cli.boards.BOARDS_DIR
    )


@pytest.mark.parametrize(("module", "script"), [("hub", "mpy-hub"), ("tools", "mpy-hub-tools")])
def test_console_scripts_are_installed(module: str, script: str) -> None:
    """The project installs both console scripts, named so they clash with no common command."""
    result = run(str(BIN / script), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")


@pytest.mark.parametrize("module", ["hub", "tools"])
def test_missing_dependency_is_one_clear_line(module: str) -> None:
    """`python -m hub` (or tools) by a Python without the dependencies (here: no site-packages
    at all, -S) prints one line naming the missing module and exits 2, no traceback."""
    result = run(sys.executable, "-S", "-m", module, "--help")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"{module}: error: missing dependency '")
    assert "install the project (make setup, or pip install -e " in lines[0]

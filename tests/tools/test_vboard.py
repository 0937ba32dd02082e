"""`python -m tools vboard`: MicroPython's REPL protocols over a pty and socket://, as mpremote
and a real board speak them, backed by the MicroPython unix port."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.vboards import Host, Vboard, mpremote, start_vboard

BANNER = b"raw REPL; CTRL-B to exit\r\n>"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vboard]:
    """One virtual board for the protocol tests (each test leaves it in the REPL)."""
    vb = start_vboard(tmp_path_factory.mktemp("vboard"))
    yield vb
    vb.stop()


@pytest.fixture
def host(board: Vboard) -> Iterator[Host]:
    h = Host(board.port)
    h.enter_raw()
    yield h
    h.close()


def test_raw_repl_runs_code_and_reports_errors(host: Host) -> None:
    """Code ends with Ctrl-D; the board answers OK, the output, EOF, the error output, EOF, >."""
    host.write(b"x = 20\r\nprint(x + 1)\x04")
    assert host.read_until(b"\x04>") == b"OK21\n\x04\x04>"
    host.write(b"print(x)\r\n1/0\x04")  # the namespace persists between runs
    reply = host.read_until(b"\x04>")
    out, err, rest = reply.split(b"\x04")
    assert out == b"OK20\n" and rest == b">"
    assert b"ZeroDivisionError" in err


def test_raw_paste_honours_flow_control(host: Host) -> None:
    """Raw-paste: R\\x01 and a window size, one \\x01 per window consumed, \\x04 ends the data."""
    host.write(b"\x05A\x01")
    assert host.read_exactly(2) == b"R\x01"
    window = struct.unpack("<H", host.read_exactly(2))[0]
    assert window >= 32
    code = b"s = '" + b"0123456789" * 300 + b"'\nprint(len(s), s[-3:])\n"
    assert len(code) > 5 * window
    sent, credit, grants = 0, window, 0
    while sent < len(code):
        while credit == 0:  # the window is used up: wait for the board's go-ahead
            assert host.read_exactly(1) == b"\x01"
            credit += window
            grants += 1
        chunk = code[sent : sent + credit]
        host.write(chunk)
        sent += len(chunk)
        credit -= len(chunk)
    host.write(b"\x04")
    reply = host.read_until(b"\x04>")
    grants += reply.count(b"\x01")
    assert reply.replace(b"\x01", b"") == b"\x043000 789\n\x04\x04>"
    assert grants == len(code) // window


def test_ctrl_c_interrupts_running_code(host: Host) -> None:
    """Ctrl-C while code runs raises KeyboardInterrupt in it; the REPL prompt comes back."""
    host.write(b"while True:\r\n    pass\r\n\x04")
    assert host.read_exactly(2) == b"OK"
    host.write(b"\x03")
    reply = host.read_until(b"\x04>")
    out, err, rest = reply.split(b"\x04")
    assert out == b"" and b"KeyboardInterrupt" in err and rest == b">"
    host.write(b"print('alive')\x04")
    assert host.read_until(b"\x04>") == b"OKalive\n\x04\x04>"


def test_soft_reset_starts_a_fresh_interpreter_in_raw_mode(host: Host, board: Vboard) -> None:
    """Ctrl-D on an empty line soft-resets: boot.py runs, main.py does not, variables are gone."""
    (board.folder / "boot.py").write_text("print('boot ran')\n")
    (board.folder / "main.py").write_text("print('main ran')\n")
    try:
        host.write(b"gone = 1\x04")
        host.read_until(b"\x04>")
        host.write(b"\x04")
        reply = host.read_until(BANNER)
        assert reply == b"OK\r\nMPY: soft reboot\r\nboot ran\n" + BANNER
        host.write(b"print('gone' in globals())\x04")
        assert host.read_until(b"\x04>") == b"OKFalse\n\x04\x04>"
    finally:
        (board.folder / "boot.py").unlink()
        (board.folder / "main.py").unlink()


def test_friendly_repl_echoes_and_evaluates(host: Host) -> None:
    """Ctrl-B leaves for the friendly REPL, which echoes and prints expression values."""
    host.write(b"\x02")
    host.read_until(b">>> ")
    host.write(b"6*7\r")
    assert host.read_until(b">>> ") == b"6*7\r\n42\n>>> "
    host.write(b"\x01")
    host.read_until(BANNER)


def test_filesystem_is_the_board_folder(board: Vboard, tmp_path: Path) -> None:
    """mpremote's fs commands, exec and run work on the folder; "/" is the folder, not the host."""
    (tmp_path / "hello.py").write_text("print('hello from', __name__)\n")
    (tmp_path / "data.txt").write_text("payload")
    result = mpremote(
        board.port,
        "fs",
        "mkdir",
        ":lib",
        "+",
        "fs",
        "cp",
        str(tmp_path / "data.txt"),
        ":/lib/data.txt",
        "+",
        "fs",
        "cp",
        str(tmp_path / "hello.py"),
        ":hello.py",
        "+",
        "fs",
        "ls",
        ":lib",
        "+",
        "run",
        str(tmp_path / "hello.py"),
        "+",
        "exec",
        "import os; print(sorted(os.listdir('/')), os.getcwd())",
    )
    assert result.returncode == 0, result.stderr
    assert " data.txt" in result.stdout and "hello from __main__" in result.stdout
    assert "['hello.py', 'lib'] /" in result.stdout
    assert (board.folder / "lib" / "data.txt").read_text() == "payload"
    assert not Path("/lib/data.txt").exists()
    result = mpremote(board.port, "fs", "rm", ":hello.py", "+", "fs", "rm", "-r", ":lib")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in board.folder.iterdir()) == []


def test_mount_and_socket_port(board: Vboard, tmp_path: Path) -> None:
    """mpremote mount serves a host folder to the board; socket:// reaches the same board."""
    (tmp_path / "shared.py").write_text("def answer():\n    return 42\n")
    result = mpremote(
        board.socket_url, "mount", str(tmp_path), "exec", "import shared; print(shared.answer())"
    )
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout.splitlines()[-1]


def test_reset_runs_boot_then_main_and_ctrl_c_stops_main(tmp_path: Path) -> None:
    """mpremote reset boots from scratch: boot.py, then main.py; connecting interrupts main.py."""
    vb = start_vboard(tmp_path)
    try:
        (vb.folder / "boot.py").write_text("print('boot.py ran')\n")
        (vb.folder / "main.py").write_text(
            "import machine, time\nprint('main.py ran, cause', machine.reset_cause())\n"
            "while True:\n    time.sleep_ms(50)\n"
        )
        assert mpremote(vb.port, "reset").returncode == 0
        out = vb.wait_console("main.py ran, cause 5")  # machine.SOFT_RESET, as on an ESP32
        assert out.index("boot.py ran") < out.index("main.py ran, cause 5")
        result = mpremote(vb.port, "exec", "print('in charge')")  # Ctrl-C ends the loop
        assert result.returncode == 0 and "in charge" in result.stdout, result.stderr
        assert "KeyboardInterrupt" in vb.console()
    finally:
        vb.stop()

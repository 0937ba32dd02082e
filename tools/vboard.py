"""`mpy-hub-tools vboard`: a virtual MicroPython board behind a serial port, for mpremote and CI.

The board's serial port is a pty (presented through a symlink, because mpremote 1.29 reads
/dev/pts/* paths with blocking reads that never time out) and a TCP port that pyserial opens as
``socket://HOST:PORT``. Behind it runs one MicroPython unix-port process per boot
(tools/unixport/vb_boot.py), whose filesystem root is the board folder: it runs boot.py, then
main.py, then serves the friendly and raw REPL (raw-paste included) on its stdin and stdout, in
one persistent namespace, as MicroPython's pyexec does on a UART. This process plays the UART:
it relays bytes, turns the interrupt character into SIGINT while the board has one set
(``micropython.kbd_intr``), and starts the next process when the board resets: a soft reset
(Ctrl-D, ``sys.exit()``) keeps the REPL mode, ``machine.reset()`` boots from scratch, and
``machine.deepsleep(ms)`` wakes after ms. Output nobody reads is dropped after a while, as a
UART's is when no program has the port open.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from tools import mpunix
from tools.errors import ToolError

BOOT_SCRIPT = mpunix.UNIXPORT_DIR / "vb_boot.py"
REPL_SOURCE = mpunix.UNIXPORT_DIR / "vb_repl.py"
# vb_repl.mpy and the modules a board has frozen, one folder per version (mpunix.compile_mpy)
LIB_DIR = mpunix.ROOT / "build" / "vboard-cache"
EXIT_SOFT = 80  # vb_boot.py: a soft reset from the friendly REPL; 81 from the raw REPL
STALL_S = 2.0  # output nobody reads for this long is dropped
# machine.reset_cause() after each kind of boot (tools/unixport/fake_machine.py)
PWRON_RESET, HARD_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 4, 5
CRASH_DELAY_S = 0.5
# Boots that run main.py get the board's heap (64K, the firmware's budget). Boots into the raw
# REPL (mpremote soft-resets into it) get more, because the REPL machinery needs it: the unix
# port is 64-bit, so compiling mpremote's 6 KB mount hook alone peaks near 50 KB, on top of the
# ~24 KB the fakes, the frozen modules and the REPL itself hold.
REPL_HEAP_SIZE = "96K"  # a board that crashed at boot does not restart in a tight loop


class VboardError(ToolError):
    """A virtual board cannot start (the message says why)."""


def build_lib() -> Path:
    """Compiles the REPL and the modules stock firmware freezes (umqtt); returns the folder."""
    mpunix.check_built()
    sources = [(REPL_SOURCE, Path(REPL_SOURCE.name)), *mpunix.tree(mpunix.MPLIB_DIR)]
    return mpunix.compile_mpy(sources, LIB_DIR)


class _Sink:
    """One way out to the host (the pty or a TCP client), written without blocking."""

    def __init__(self, fd: int, drain_fd: int | None = None) -> None:
        self.fd = fd
        self.drain_fd = drain_fd  # our own end of the pty, to throw away what nobody read
        self.buf = bytearray()
        self.stalled_at: float | None = None

    def push(self, data: bytes) -> None:
        self.buf += data
        self.flush()

    def flush(self) -> None:
        while self.buf:
            try:
                n = os.write(self.fd, self.buf[:65536])
            except BlockingIOError:
                n = 0
            except OSError:  # the TCP client went away
                self.buf.clear()
                return
            if n == 0:
                now = time.monotonic()
                if self.stalled_at is None:
                    self.stalled_at = now
                elif now - self.stalled_at > STALL_S:
                    self.drop()
                return
            del self.buf[:n]
            self.stalled_at = None

    def drop(self) -> None:
        self.buf.clear()
        self.stalled_at = None
        if self.drain_fd is not None:
            with contextlib.suppress(OSError):
                while os.read(self.drain_fd, 65536):
                    pass


class VirtualBoard:
    def __init__(
        self,
        folder: Path,
        port_link: Path,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        heap: str = mpunix.HEAP_SIZE,
        log: Path | None = None,
        repl_heap: str = REPL_HEAP_SIZE,
    ) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.repl_heap = repl_heap
        self.lib = build_lib()
        self.log = log.open("ab") if log is not None else None
        self.sel = selectors.DefaultSelector()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        os.set_blocking(self.slave, False)
        self.port_link = port_link
        with contextlib.suppress(FileNotFoundError):
            port_link.unlink()
        port_link.symlink_to(os.ttyname(self.slave))
        self.pty_sink = _Sink(self.master, self.slave)
        self.sel.register(self.master, selectors.EVENT_READ, self._on_pty)
        self.listener = socket.create_server((host, tcp_port))
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)
        self.client: socket.socket | None = None
        self.client_sink: _Sink | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: tuple[int, int] | None = None  # (read from the board, write to the board)
        self.ctl_buf = b""
        self.stdin_buf = bytearray()
        self.intr: int | None = None  # the board's interrupt character, None when off
        self.boot_at: float | None = None  # when to start the next boot (after sleep/crash)
        self.next_boot = ("friendly", PWRON_RESET)
        self.running = True

    @property
    def socket_url(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"socket://{host}:{port}"

    # --- the board's process -----------------------------------------------------------------
    def _spawn(self, mode: str, cause: int) -> None:
        board_r, agent_w = os.pipe()
        agent_r, board_w = os.pipe()
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join(map(str, (mpunix.UNIXPORT_DIR, self.lib)))
        env["VBOARD_CTL"] = f"{agent_w},{agent_r}"
        env["FAKE_RESET_CAUSE"] = str(cause)
        heap = self.heap if mode == "friendly" else self.repl_heap
        cmd = mpunix.firmware_command(heap, BOOT_SCRIPT, str(self.folder), mode, str(self.lib))
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(agent_w, agent_r),
            start_new_session=True,  # a Ctrl-C in the vboard's terminal is not the board's
        )
        os.close(agent_w)
        os.close(agent_r)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.ctl = (board_r, board_w)
        self.ctl_buf = b""
        self.intr = None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ, self._on_output)
        self.sel.register(board_r, selectors.EVENT_READ, self._on_ctl)
        self._feed()

    def _on_output(self, _: int) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            data = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if data:
            self._console(data)
        else:
            self._ended()

    def _on_ctl(self, fd: int) -> None:
        data = self.ctl_buf + os.read(fd, 64)
        while len(data) >= 2:
            if data[0:1] == b"I":  # kbd_intr(c): 0xff turns it off
                self.intr = None if data[1] == 0xFF else data[1]
                assert self.ctl is not None
                os.write(self.ctl[1], data[1:2])
            data = data[2:]
        self.ctl_buf = data

    def _ended(self) -> None:
        """The board's process has exited: decide how the board boots next."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and self.ctl is not None
        self.sel.unregister(proc.stdout)
        self.sel.unregister(self.ctl[0])
        for fd in self.ctl:
            os.close(fd)
        self.ctl = None
        with contextlib.suppress(OSError):
            if self._stdin_registered():
                self.sel.unregister(proc.stdin)  # type: ignore[arg-type]
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        code = proc.wait()
        self.proc = None
        self.intr = None
        if not self.running:
            return
        mode, cause = self.next_boot
        if code in (EXIT_SOFT, EXIT_SOFT + 1):
            mode = "raw" if code == EXIT_SOFT + 1 else "friendly"
            self._spawn(mode, cause)  # input typed before the soft reset is kept
            return
        self.stdin_buf.clear()  # a reset loses what the UART had buffered
        if code == mpunix.EXIT_REBOOT:
            self._console(b"\r\nvboard: reset by machine.reset()\r\n")
            self.next_boot = ("friendly", SOFT_RESET)
            self._spawn("friendly", SOFT_RESET)
        elif code == mpunix.EXIT_DEEPSLEEP:
            sleep_file = self.folder / "deepsleep.ms"
            try:
                ms = int(sleep_file.read_text() or 0)
                sleep_file.unlink()
            except (OSError, ValueError):
                ms = 0
            self.next_boot = ("friendly", DEEPSLEEP_RESET)
            self.boot_at = time.monotonic() + ms / 1000
        else:
            note = f"vboard: the board's process exited with code {code}; resetting"
            print(note, file=sys.stderr, flush=True)
            self._console(f"\r\n{note}\r\n".encode())
            self.next_boot = ("friendly", HARD_RESET)
            self.boot_at = time.monotonic() + CRASH_DELAY_S

    # --- the host side -----------------------------------------------------------------------
    def _console(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        self.pty_sink.push(data)
        if self.client_sink is not None:
            self.client_sink.push(data)

    def _on_pty(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        self._from_host(data)

    def _on_accept(self, _: int) -> None:
        conn, _addr = self.listener.accept()
        self._drop_client()  # a second opener takes the port over
        conn.setblocking(False)
        self.client = conn
        self.client_sink = _Sink(conn.fileno())
        self.sel.register(conn, selectors.EVENT_READ, self._on_client)

    def _on_client(self, _: int) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._from_host(data)
        else:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.client is not None:
            self.sel.unregister(self.client)
            self.client.close()
            self.client = None
            self.client_sink = None

    def _from_host(self, data: bytes) -> None:
        if self.proc is None:
            return  # a board in reset or asleep hears nothing
        while self.intr is not None and (i := data.find(self.intr)) >= 0:
            self.stdin_buf += data[:i]
            self._feed()
            os.kill(self.proc.pid, signal.SIGINT)  # as the UART's interrupt handler
            data = data[i + 1 :]
        self.stdin_buf += data
        self._feed()

    def _stdin_registered(self) -> bool:
        assert self.proc is not None
        try:
            self.sel.get_key(self.proc.stdin)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def _feed(self, _: int | None = None) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        while self.stdin_buf:
            try:
                n = os.write(proc.stdin.fileno(), self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # the process is exiting; _ended() follows
                return
            del self.stdin_buf[:n]
        registered = self._stdin_registered()
        if self.stdin_buf and not registered:
            self.sel.register(proc.stdin, selectors.EVENT_WRITE, self._feed)
        elif not self.stdin_buf and registered:
            self.sel.unregister(proc.stdin)

    # --- running -----------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self.running = False

    def serve(self) -> None:
        """Powers the board on and serves it until stop()."""
        mode, cause = self.next_boot
        self._spawn(mode, cause)
        while self.running:
            timeout = 0.1 if (self.pty_sink.buf or self.client_sink) else 1.0
            if self.boot_at is not None:
                timeout = min(timeout, max(0.0, self.boot_at - time.monotonic()))
            for key, _events in self.sel.select(timeout):
                # A reset in an earlier handler may have closed this fd, or reused its number.
                with contextlib.suppress(KeyError):
                    if self.running and self.sel.get_key(key.fileobj) is key:
                        key.data(key.fd)
            if self.boot_at is not None and time.monotonic() >= self.boot_at and self.running:
                self.boot_at = None
                self._spawn(*self.next_boot)
            self.pty_sink.flush()
            if self.client_sink is not None:
                self.client_sink.flush()

    def close(self) -> None:
        """Pulls the plug: the board's process dies at once, as a board without power."""
        self.running = False
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self._ended()
        self._drop_client()
        self.listener.close()
        os.close(self.master)
        os.close(self.slave)
        with contextlib.suppress(FileNotFoundError):
            self.port_link.unlink()
        if self.log is not None:
            self.log.close()


def run(
    folder: Path | None,
    port_link: Path | None,
    host: str,
    tcp_port: int,
    heap: str,
    log: Path | None,
) -> None:
    mpunix.check_built()
    with contextlib.ExitStack() as stack:
        runtime = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vboard-")))
        board = VirtualBoard(
            folder or runtime / "fs", port_link or runtime / "ttyVB0", host, tcp_port, heap, log
        )
        stack.callback(board.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, board.stop)
        print(
            f"ready port={board.port_link} socket={board.socket_url} dir={board.folder}",
            flush=True,
        )
        board.serve()

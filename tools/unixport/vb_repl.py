# The virtual board's REPL on stdin/stdout, as MicroPython's shared/runtime/pyexec.c serves it
# on a UART: the friendly REPL, the raw REPL (Ctrl-A) and raw-paste mode (Ctrl-E A Ctrl-A, with
# its flow control), one persistent namespace. Ctrl-C while code runs arrives as SIGINT
# (tools/vboard.py); Ctrl-D with nothing typed asks for a soft reset, which serve() returns.
# Compiled to .mpy (tools/vboard.py): it loads after main.py, into a heap the app may have filled.
import sys

import vb_micropython

_WINDOW = 256  # raw-paste window (MICROPY_REPL_STDIN_BUFFER_MAX)
_BANNER = b'MicroPython v1.25.0 on 2025-05-04; vboard (unix port)\r\nType "help()" for more information.\r\n'
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
_SOFT = 1  # run(): a soft reset was asked for
_w = sys.stdout.buffer.write
_rd = sys.stdin.buffer.readinto
_c = bytearray(1)


def getc():
    if not _rd(_c):
        sys.exit(0)  # the serial side has gone: power off
    return _c[0]


def run(code, ns, single=False):
    # Runs code with Ctrl-C enabled; returns (error or None, _SOFT or 0).
    err = None
    vb_micropython.kbd_intr(3)
    try:
        if single:
            code = compile(code, "<stdin>", "single")
        exec(code, ns)
    except SystemExit as e:
        vb_micropython.kbd_intr(-1)
        if e.args and e.args[0] in (75, 76):  # machine.reset(), machine.deepsleep()
            raise
        return None, _SOFT
    except BaseException as e:  # noqa: B036
        err = e
    vb_micropython.kbd_intr(-1)
    return err, 0


class Buf:
    # The code being received. A bytearray grown a byte at a time is copied every few bytes
    # and fragments the heap; this one doubles.
    def __init__(self):
        self.b = bytearray(128)
        self.n = 0

    def add(self, c):
        if self.n == len(self.b):
            b = bytearray(2 * self.n)
            b[: self.n] = self.b
            self.b = b
        self.b[self.n] = c
        self.n += 1

    def code(self):
        b = self.b
        self.b = None
        return b if self.n == len(b) else b[: self.n]


def run_raw(buf, ns):
    err, soft = run(buf.code(), ns)
    _w(b"\x04")
    if err is not None:
        sys.print_exception(err)
    _w(b"\x04")
    return soft


def paste(ns):
    _w(b"R\x01")
    _w(bytes((_WINDOW & 0xFF, _WINDOW >> 8)))
    code = Buf()
    remain = _WINDOW
    while True:
        c = getc()
        if c == 4 or c == 3:
            _w(b"\x04")  # end of data acknowledged
            if c == 3:
                _w(b"\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04")
                return 0
            return run_raw(code, ns)
        code.add(c)
        remain -= 1
        if not remain:
            _w(b"\x01")  # another window may come
            remain = _WINDOW


def raw(ns):
    # Returns True to switch to the friendly REPL, or _SOFT + 1 for a soft reset.
    _w(_RAW_BANNER)
    line = Buf()
    while True:
        c = getc()
        if c == 1:
            if line.n == 2 and line.b[0] == 5:
                if line.b[1] == 65:  # "A": raw paste
                    if paste(ns):
                        return _SOFT + 1
                    _w(b">")
                else:
                    _w(b"R\x00")
            else:
                _w(_RAW_BANNER)
            line = Buf()
        elif c == 2:
            _w(b"\r\n")
            return True
        elif c == 3:
            line = Buf()
        elif c == 4:
            _w(b"OK")
            if not line.n:
                _w(b"\r\n")
                return _SOFT + 1
            if run_raw(line, ns):
                return _SOFT + 1
            line = Buf()
            _w(b">")
        else:
            line.add(c)


def friendly(ns):
    # Returns True to switch to the raw REPL, or _SOFT for a soft reset.
    _w(_BANNER)
    _w(b">>> ")
    line = bytearray()
    block = None  # lines of a compound statement so far
    while True:
        c = getc()
        if 1 <= c <= 5 and not line and block is None:
            _w(b"\r\n")
            if c == 1:
                return True
            if c == 2:
                _w(_BANNER)
            elif c == 4:
                return _SOFT
            elif c == 5:
                _w(b"paste mode is not supported by the virtual board\r\n")
            _w(b">>> ")
        elif c == 3:
            _w(b"\r\n>>> ")
            line = bytearray()
            block = None
        elif c == 13:
            _w(b"\r\n")
            if block is not None or line.endswith(b":"):
                if line:
                    block = (block or b"") + line + b"\n"
                    line = bytearray()
                    _w(b"... ")
                    continue
                line, block = block, None
            if line.strip():
                err, soft = run(bytes(line), ns, True)
                if err is not None:
                    sys.print_exception(err)
                if soft:
                    return _SOFT
            line = bytearray()
            _w(b">>> ")
        elif c in (8, 127):
            if line:
                line.pop()
                _w(b"\x08 \x08")
        elif c >= 32 or c == 9:
            line.append(c)
            _c[0] = c
            _w(_c)


def serve(ns, in_raw):
    # Serves the REPL until a soft reset; returns 1 when it happened in the raw REPL.
    while True:
        try:
            r = raw(ns) if in_raw else friendly(ns)
        except KeyboardInterrupt:  # a late Ctrl-C after the code it was meant for ended
            continue
        if r is True:
            in_raw = not in_raw
        else:
            return r - _SOFT

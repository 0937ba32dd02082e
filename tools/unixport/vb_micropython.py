# Stands in for `micropython` on the virtual board (tools/vboard.py). Everything is the real
# module's except kbd_intr(): on a board the UART turns the interrupt character into a
# KeyboardInterrupt; here the board's serial side (tools/vboard.py) does that with SIGINT, so
# kbd_intr() tells it, and waits for its answer so that no byte sent after the change is
# judged by the old setting (mpremote's mount protocol relies on that).
import os

from micropython import *  # noqa: F403

_fds = os.getenv("VBOARD_CTL").split(",")  # (to the board's serial side, from it)
_out = open("/dev/fd/" + _fds[0], "wb")  # opened before the board folder becomes "/"
_in = open("/dev/fd/" + _fds[1], "rb")
del _fds
_msg = bytearray(b"I\xff")


def kbd_intr(c):
    c &= 0xFF
    _msg[1] = c
    _out.write(_msg)
    while True:
        try:
            if _in.read(1)[0] == c:
                return
        except KeyboardInterrupt:  # a Ctrl-C judged by the old setting: keep waiting
            pass

# Stands in for `machine` when the firmware runs on the MicroPython unix port.
# Installed in sys.modules by run.py; only node/hw.py imports it.
import os
import sys

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# The simulator restarts a process that exits with this code, as a board would reboot.
EXIT_REBOOT = 75


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2

    def __init__(self, pin, mode=IN, pull=None, value=None):
        self.pin = pin
        self._value = 1 if value is None else value

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = v


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


def unique_id():
    return os.getenv("FAKE_UNIQUE_ID", "unixport").encode()


def reset_cause():
    return int(os.getenv("FAKE_RESET_CAUSE", str(PWRON_RESET)))


def reset():
    sys.exit(EXIT_REBOOT)

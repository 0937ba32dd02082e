# Stands in for `machine` when the firmware runs on the MicroPython unix port.
# Installed in sys.modules by run.py; only node/hw.py imports it.
import os
import struct
import sys

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# The simulator restarts a process that exits with this code, as a board would reboot;
# deep sleep exits with EXIT_DEEPSLEEP after writing the sleep time to FAKE_SLEEP_FILE.
EXIT_REBOOT = 75
EXIT_DEEPSLEEP = 76
SLEEP_FILE = "deepsleep.ms"
pins = {}  # pin number -> last value written, for tests


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 2

    def __init__(self, pin, mode=IN, pull=None, value=None):
        self.pin = pin
        self._value = 1 if value is None else value
        pins[pin] = self._value

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0
        pins[self.pin] = self._value


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self._n = 0

    def atten(self, a):
        pass

    def read_u16(self):
        self._n += 1
        return 20000 + (self._n * 997) % 2000  # deterministic, wanders a little


# A BME280 at 0x76 with the datasheet's example calibration (T: 25.08 C, P: 1006.53 hPa).
_BME = {
    0xD0: b"\x60",
    0x88: struct.pack("<HhhHhhhhhhhh", 27504, 26435, -1000, 36477, -10685, 3024, 2855, 140,
                      -7, 15500, -14600, 6000),
    0xA1: b"\x4b",
    0xE1: bytes((0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1E)),
    0xF3: b"\x00",
    0xF7: bytes((415148 >> 12, (415148 >> 4) & 0xFF, (415148 & 0xF) << 4,
                 519888 >> 12, (519888 >> 4) & 0xFF, (519888 & 0xF) << 4, 0x6E, 0x00)),
}


class I2C:
    def __init__(self, bus=0, sda=None, scl=None, freq=100000):
        self.devices = {0x76: _BME}

    def scan(self):
        return list(self.devices)

    def _regs(self, addr):
        if addr not in self.devices:
            raise OSError(19)  # ENODEV, as the ESP32 port reports a missing device
        return self.devices[addr]

    def readfrom_mem(self, addr, reg, n):
        return self._regs(addr)[reg][:n]

    def readfrom_mem_into(self, addr, reg, buf):
        data = self._regs(addr)[reg]
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, reg, buf):
        self._regs(addr)


def unique_id():
    return os.getenv("FAKE_UNIQUE_ID", "unixport").encode()


def reset_cause():
    return int(os.getenv("FAKE_RESET_CAUSE", str(PWRON_RESET)))


def reset():
    sys.exit(EXIT_REBOOT)


def deepsleep(ms=0):
    with open(SLEEP_FILE, "w") as f:
        f.write(str(ms))
    sys.exit(EXIT_DEEPSLEEP)

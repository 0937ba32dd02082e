# The only module that imports machine: pins, watchdog, identity, resets.
# Under the unix port a fake `machine` is installed in sys.modules before this import.
import binascii
import os

import machine

START_DELAY_MS = 500


def safe_mode(pin=0):
    # A board wires a button to the safe-mode pin (GPIO0 on ESP32 dev kits); held low = safe.
    try:
        return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
    except (AttributeError, ValueError):
        return False


def boot_id():
    # A fresh random id each boot: readings are (boot, seq) so the hub spots gaps and duplicates.
    return binascii.hexlify(os.urandom(4))


def unique_id():
    return binascii.hexlify(machine.unique_id())


class Watchdog:
    # Fed once per loop; disabled when the board sets no timeout (the unix-sim board).
    def __init__(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms) if timeout_ms else None

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()


def reboot():
    machine.reset()

# The only module that imports machine (and the dht, onewire and ds18x20 drivers): pins,
# buses, watchdog, identity, resets, deep sleep.
# Under the unix port fakes are installed in sys.modules before this import.
import binascii
import os

import machine

START_DELAY_MS = 500
_CAUSES = {
    machine.PWRON_RESET: "power-on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep-sleep",
    machine.SOFT_RESET: "soft",
}


def safe_mode(pin=0):
    # A board wires a button to the safe-mode pin (GPIO0 on ESP32 dev kits); held low = safe.
    try:
        return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
    except (AttributeError, ValueError):
        return False


def boot_id():
    # A fresh random id each boot: readings are (boot, seq) so the hub spots gaps and duplicates.
    return binascii.hexlify(os.urandom(4))


def reset_cause():
    return _CAUSES.get(machine.reset_cause(), "unknown")


class Watchdog:
    # Fed once per loop; disabled when the board sets no timeout (the unix-sim board).
    def __init__(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms) if timeout_ms else None

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()


class Output:
    # A digital output (LED, relay); `invert` for active-low wiring.
    def __init__(self, pin, invert=False):
        self._pin = machine.Pin(pin, machine.Pin.OUT, value=1 if invert else 0)
        self._invert = invert

    def set(self, on):
        self._pin.value((not on) if self._invert else bool(on))

    def get(self):
        v = self._pin.value()
        return int(not v) if self._invert else int(v)


def i2c(sda, scl, freq=100000):
    return machine.I2C(0, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)


def adc(pin):
    a = machine.ADC(machine.Pin(pin))
    try:
        a.atten(machine.ADC.ATTN_11DB)  # ESP32: full 0..3.3 V range
    except AttributeError:
        pass
    return a


def dht22(pin):
    import dht

    return dht.DHT22(machine.Pin(pin))


def onewire_temp(pin):
    import ds18x20
    import onewire

    return ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))


def deep_sleep(ms):
    machine.deepsleep(ms)


def reboot():
    machine.reset()

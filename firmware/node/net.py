# The only module that imports network: bring Wi-Fi up and report on it.
# Under the unix port a fake `network` is installed in sys.modules before this import.
import time

import network

_wlan = None


def up(ssid, password, timeout_ms=15000):
    # Returns True once associated; never blocks longer than timeout_ms.
    global _wlan
    if _wlan is None:
        _wlan = network.WLAN(network.STA_IF)
        _wlan.active(True)
    if _wlan.isconnected():
        return True
    if ssid:
        _wlan.connect(ssid, password)
    start = time.ticks_ms()
    while not _wlan.isconnected():
        if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
            return False
        time.sleep_ms(100)
    return True


def rssi():
    try:
        return _wlan.status("rssi")
    except (AttributeError, ValueError, OSError):
        return None

# Stands in for `network` on the MicroPython unix port: a station that is always associated.
STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = on

    def connect(self, ssid=None, password=None):
        pass

    def isconnected(self):
        return self._active

    def status(self, param=None):
        if param == "rssi":
            return -55
        return 1010  # STAT_GOT_IP

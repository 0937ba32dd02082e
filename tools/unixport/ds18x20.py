# Stands in for MicroPython's `ds18x20` on the unix port: one DS18B20 on the bus.


class DS18X20:
    def __init__(self, ow):
        self._n = 0

    def scan(self):
        return [bytearray(b"\x28\x01\x02\x03\x04\x05\x06\x07")]

    def convert_temp(self):
        self._n += 1

    def read_temp(self, rom):
        return 19.5 + (self._n % 4) * 0.0625

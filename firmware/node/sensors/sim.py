# A deterministic simulated sensor: a slow wave around a base value, phase set by the device id.
import math


class SimSensor:
    def __init__(self, spec, device_id):
        self.names = (spec.get("name", "temp"),)
        self.decimals = (spec.get("decimals", 1),)
        self._base = spec.get("base", 21.0)
        self._amplitude = spec.get("amplitude", 3.0)
        phase = 0
        for ch in device_id:
            phase = (phase * 31 + ord(ch)) % 3600
        self._phase = phase * 37 % 360  # spread ids that differ in one character
        self._n = 0

    def read(self):
        self._n += 1
        angle = (self._phase + self._n * 7) * math.pi / 180
        return (self._base + self._amplitude * math.sin(angle),)

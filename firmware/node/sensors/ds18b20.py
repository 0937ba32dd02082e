# DS18B20 on a 1-Wire bus: the first device found; a conversion takes up to 750 ms.
import time

from micropython import const

_CONVERT_MS = const(750)


class DS18B20:
    def __init__(self, spec, bus):
        self.names = tuple(spec.get("names", ("temp",)))
        self.decimals = (spec.get("decimals", 2),)
        self._bus = bus
        self._rom = None

    def read(self):
        if self._rom is None:
            roms = self._bus.scan()
            if not roms:
                raise OSError(19)  # ENODEV: nothing on the bus
            self._rom = roms[0]
        self._bus.convert_temp()
        time.sleep_ms(_CONVERT_MS)
        return (self._bus.read_temp(self._rom),)

# DHT22 (AM2302): temperature and relative humidity over one wire; at most one read per 2 s.


class DHT22:
    def __init__(self, spec, dev):
        self.names = tuple(spec.get("names", ("temp", "hum")))
        self.decimals = (1, 1)
        self._dev = dev

    def read(self):
        self._dev.measure()  # raises OSError (ETIMEDOUT) when the sensor does not answer
        return (self._dev.temperature(), self._dev.humidity())

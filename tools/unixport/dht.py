# Stands in for MicroPython's `dht` driver on the unix port: a DHT22 that always answers.


class DHT22:
    def __init__(self, pin):
        self._n = 0

    def measure(self):
        self._n += 1

    def temperature(self):
        return 22.0 + (self._n % 10) / 10

    def humidity(self):
        return 45.0 + (self._n % 5)

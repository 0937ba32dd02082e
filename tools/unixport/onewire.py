# Stands in for MicroPython's `onewire` on the unix port.


class OneWire:
    def __init__(self, pin):
        self.pin = pin

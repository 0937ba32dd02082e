# An analog input: value = offset + scale * raw, raw from read_u16() (0..65535).


class ADCSensor:
    def __init__(self, spec, adc):
        self.names = tuple(spec.get("names", (spec.get("name", "adc"),)))
        self.decimals = (spec.get("decimals", 2),)
        self._scale = spec.get("scale", 1.0 / 65535)
        self._offset = spec.get("offset", 0.0)
        self._adc = adc

    def read(self):
        return (self._offset + self._scale * self._adc.read_u16(),)

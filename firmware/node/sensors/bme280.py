# Bosch BME280 over I2C: temperature (C), humidity (%RH), pressure (hPa), one forced
# measurement per read, with the datasheet's floating-point compensation (section 8.1).
import struct
import time

from micropython import const

_ID = const(0xD0)
_CHIP_ID = const(0x60)
_CTRL_HUM = const(0xF2)
_STATUS = const(0xF3)
_CTRL_MEAS = const(0xF4)
_DATA = const(0xF7)
_FORCED_X1 = const(0x25)  # temperature x1, pressure x1, forced mode
_WAIT_MS = const(10)
_MAX_WAITS = const(10)


class BME280:
    def __init__(self, spec, i2c):
        self.names = tuple(spec.get("names", ("temp", "hum", "press")))
        self.decimals = (2, 1, 1)
        self._i2c = i2c
        self._addr = spec.get("address", 0x76)
        self._raw = bytearray(8)
        self._cal = None

    def _calibrate(self):
        i2c, a = self._i2c, self._addr
        if i2c.readfrom_mem(a, _ID, 1)[0] != _CHIP_ID:
            raise OSError(19)  # ENODEV: no BME280 at this address
        c = struct.unpack("<HhhHhhhhhhhh", i2c.readfrom_mem(a, 0x88, 24))
        h1 = i2c.readfrom_mem(a, 0xA1, 1)[0]
        e = i2c.readfrom_mem(a, 0xE1, 7)
        h2, h3 = struct.unpack_from("<hB", e, 0)
        h4 = (e[3] << 4) | (e[4] & 0x0F)
        h5 = (e[5] << 4) | (e[4] >> 4)
        h4 = h4 - 4096 if h4 > 2047 else h4
        h5 = h5 - 4096 if h5 > 2047 else h5
        h6 = e[6] - 256 if e[6] > 127 else e[6]
        self._cal = c + (h1, h2, h3, h4, h5, h6)
        i2c.writeto_mem(a, _CTRL_HUM, b"\x01")  # humidity x1

    def read(self):
        if self._cal is None:
            self._calibrate()
        i2c, a = self._i2c, self._addr
        i2c.writeto_mem(a, _CTRL_MEAS, bytes((_FORCED_X1,)))
        for _ in range(_MAX_WAITS):  # bounded: a forced x1 measurement takes under 10 ms
            time.sleep_ms(_WAIT_MS)
            if not i2c.readfrom_mem(a, _STATUS, 1)[0] & 0x08:
                break
        else:
            raise OSError(110)
        i2c.readfrom_mem_into(a, _DATA, self._raw)
        r = self._raw
        adc_p = (r[0] << 12) | (r[1] << 4) | (r[2] >> 4)
        adc_t = (r[3] << 12) | (r[4] << 4) | (r[5] >> 4)
        adc_h = (r[6] << 8) | r[7]
        return self.compensate(adc_t, adc_p, adc_h)

    def compensate(self, adc_t, adc_p, adc_h):
        t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6 = self._cal
        v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
        v2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
        t_fine = v1 + v2
        v1 = t_fine / 2.0 - 64000.0
        v2 = v1 * v1 * p6 / 32768.0 + v1 * p5 * 2.0
        v2 = v2 / 4.0 + p4 * 65536.0
        v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
        v1 = (1.0 + v1 / 32768.0) * p1
        if v1 == 0:
            raise OSError(5)  # EIO: calibration data unusable
        p = (1048576.0 - adc_p - v2 / 4096.0) * 6250.0 / v1
        p += (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0
        h = t_fine - 76800.0
        h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
            h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h)))
        h = h * (1.0 - h1 * h / 524288.0)
        return (t_fine / 5120.0, min(max(h, 0.0), 100.0), p / 100.0)

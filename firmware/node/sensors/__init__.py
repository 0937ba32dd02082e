# Sensor adapters. Each has .names and .decimals (one entry per channel, e.g. temp and hum)
# and .read() -> a tuple of floats, raising OSError when the sensor does not answer.
# Hardware comes from node/hw.py only; adapters are imported lazily, by kind.


def pin_number(spec, pins, key="pin"):
    # A sensor names a board pin ("dht") or gives a GPIO number.
    name = spec.get(key)
    if name is None:
        raise ValueError("sensor %r needs %r" % (spec.get("kind"), key))
    if isinstance(name, int):
        return name
    if name not in pins:
        raise ValueError("sensor pin %r is not in the board's pins" % name)
    return pins[name]


def make(spec, device_id, pins=None, hw=None):
    kind = spec.get("kind")
    pins = pins or {}
    if kind == "sim":
        from node.sensors.sim import SimSensor

        return SimSensor(spec, device_id)
    if hw is None:
        from node import hw
    if kind == "dht22":
        from node.sensors.dht22 import DHT22

        return DHT22(spec, hw.dht22(pin_number(spec, pins)))
    if kind == "ds18b20":
        from node.sensors.ds18b20 import DS18B20

        return DS18B20(spec, hw.onewire_temp(pin_number(spec, pins)))
    if kind == "bme280":
        from node.sensors.bme280 import BME280

        bus = hw.i2c(pin_number(spec, pins, "sda"), pin_number(spec, pins, "scl"))
        return BME280(spec, bus)
    if kind == "adc":
        from node.sensors.adc import ADCSensor

        return ADCSensor(spec, hw.adc(pin_number(spec, pins)))
    raise ValueError("unknown sensor kind %r" % kind)

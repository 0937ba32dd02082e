# Sensor adapters: each has .name, .decimals and .read() -> float.


def make(spec, device_id, hw=None):
    kind = spec.get("kind")
    if kind == "sim":
        from node.sensors.sim import SimSensor

        return SimSensor(spec, device_id)
    raise ValueError("unknown sensor kind %r" % kind)

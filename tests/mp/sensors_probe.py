# Runs under the MicroPython unix port: builds every sensor kind through node.sensors.make
# with the unix-port fakes behind node/hw.py, and prints "<kind> <names> <values>" per sensor.
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

from node import sensors  # noqa: E402

pins = {"dht": 4, "probe": 17, "sda": 8, "scl": 9, "light": 34}
specs = [
    {"kind": "sim", "name": "temp"},
    {"kind": "dht22", "pin": "dht"},
    {"kind": "ds18b20", "pin": "probe", "names": ["water"]},
    {"kind": "bme280", "sda": "sda", "scl": "scl"},
    {"kind": "adc", "pin": "light", "name": "light", "scale": 0.001, "offset": 1.0},
]
for spec in specs:
    s = sensors.make(spec, "probe-1", pins)
    values = s.read()
    print(spec["kind"], ",".join(s.names), ",".join("%.*f" % (d, v)
                                                    for d, v in zip(s.decimals, values)))
try:
    sensors.make({"kind": "bme280", "sda": "sda", "scl": "scl", "address": 0x77}, "p", pins).read()
except OSError as exc:
    print("bme280@0x77", "OSError", exc.args[0])
try:
    sensors.make({"kind": "dht22", "pin": "nope"}, "p", pins)
except ValueError as exc:
    print("bad-pin", "ValueError", exc)

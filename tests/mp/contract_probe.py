# Runs under the MicroPython unix port: prints what the firmware formats, one line each,
# "<topic> <payload>", so the hub's parser can check it (tests/firmware/test_contract.py).
# Readings go through the flash ring exactly as in the loop, and come out of it to print.
import gc
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

from node import config, health, net  # noqa: E402
from node.app import App  # noqa: E402

# As main.py does after importing the app: without it, App() meets the garbage of compiling
# this script and the imports, and under 64K it fails for want of 592 contiguous bytes in
# some working directories, whatever the firmware (the path strings shift the heap).
gc.collect()
net.up(None, None)  # the fake station associates at once
app = App(config.load())
ring = app.ring
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for i in range(len(app.sensors)):
        app.take_readings(i)
while len(ring):
    channel, payload = ring.get(ring.first)
    print(app.topics[channel].decode(), payload.decode())
    ring.ack(ring.first)
print(app.status_topic.decode(), "online")
print(app.command_topic.decode(), "-")
print(app.reply_topic.decode(), "-")
print(app.meta_topic.decode(), health.payload(app).decode())

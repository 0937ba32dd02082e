# Runs under the MicroPython unix port: prints what the firmware formats, one line each,
# "<topic> <payload>", so the hub's parser can check it (tests/firmware/test_contract.py).
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

from node import config  # noqa: E402
from node.app import App  # noqa: E402

app = App(config.load())
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for i in range(len(app.sensors)):
        print(app.topics[i].decode(), app.take_reading(i).decode())
print(app.status_topic.decode(), "online")
print(app.command_topic.decode(), "-")
print(app.reply_topic.decode(), "-")

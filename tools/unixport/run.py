# Runs the firmware on the MicroPython unix port: fakes for the hardware modules, then boot.py
# (which picks the app folder) and main.py, as a board does.
# Started by tools/mpunix.py with the device folder as the working directory.
import os
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network


def esp32_builtin():
    # A board that takes firmware images (board.json "ota_image") has the esp32 module.
    import json

    try:
        with open("board.json") as f:
            return json.load(f).get("ota_image") is True
    except (OSError, ValueError):
        return False


try:
    os.stat("flash")  # the fake esp32's app slots (tools/unixport/esp32.py): a bootloader's step
except OSError:
    pass
else:
    import esp32boot

    esp32boot.bootloader()
    del sys.modules["esp32boot"], esp32boot
if esp32_builtin():
    import esp32  # noqa: F401  (built into a board's firmware: loaded before the app, as there)

import boot  # noqa: E402,F401  (firmware/boot.py)
import main  # noqa: E402,F401  (firmware/main.py, found through MICROPYPATH)

# Runs the firmware on the MicroPython unix port: fakes for the hardware modules, then boot.py
# (which picks the app folder) and main.py, as a board does.
# Started by tools/mpunix.py with the device folder as the working directory.
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

import boot  # noqa: E402,F401  (firmware/boot.py)
import main  # noqa: E402,F401  (firmware/main.py, found through MICROPYPATH)

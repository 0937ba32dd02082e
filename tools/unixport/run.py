# Runs the firmware on the MicroPython unix port: fakes for the hardware modules, then main.py.
# Started by tools/mpunix.py with the device folder as the working directory.
import sys

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

import main  # noqa: E402,F401  (firmware/main.py, found through MICROPYPATH)

# Runs under the MicroPython unix port: reads a JSON list of strings from the file named by
# argv[1] and prints, as a JSON list, whether the firmware's device-id check accepts each
# (tests/firmware/test_device_id.py compares it with hub/topics.py's DEVICE_ID_RE).
import json
import sys

from node import config

with open(sys.argv[1]) as f:
    cases = json.load(f)
print(json.dumps([config.valid_id(case) for case in cases]))

# boot.py runs on every boot, deep-sleep wake included: it only picks the app folder (the
# over-the-air update pointer, otaboot.py), then unloads that code; main.py starts the app.
import sys

import otaboot

otaboot.pick()
del sys.modules["otaboot"]
del otaboot

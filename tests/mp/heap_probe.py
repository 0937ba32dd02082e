# Runs under MicroPython with -X heapsize=64K in a device folder, against a real hub: boots as
# main.py does, then runs the real App loop until the app would reboot (an app update it was
# offered has downloaded completely, or a settings update has begun its trial) or 60 s pass;
# prints one line of JSON: the heap after boot and its high-water mark, sampled before each
# loop's gc.collect(), as tools/unixport/steady_state.py does for readings.
import gc
import json
import sys
import time

import fake_machine
import fake_network

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

from node import session  # noqa: E402
from node.start import boot  # noqa: E402

app = boot()  # as main.py does: node/start.py is unloaded after
del boot
rebooting = []
app.reboot = lambda: rebooting.append(1)  # where the device would reboot, the probe ends
gc.collect()
base = gc.mem_alloc()
high = 0
errors = 0
last = None
start = time.ticks_ms()
while not rebooting and time.ticks_diff(time.ticks_ms(), start) < 60000:
    try:
        app.step()
    except Exception as exc:  # as App.run: the link failed, back off
        errors += 1
        last = exc
        session.link_failed(app, exc)
    high = max(high, gc.mem_alloc())
    gc.collect()
    time.sleep_ms(20)
print(json.dumps({"done": bool(rebooting), "heap_total": gc.mem_alloc() + gc.mem_free(),
                  "heap_base": base, "heap_high": high, "errors": errors, "last": repr(last)}))

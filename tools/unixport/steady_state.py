# Runs under the MicroPython unix port: the real App loop (step, watchdog, gc) at full speed
# against a real hub, N readings, then prints one line of JSON measurements. A reading is
# taken (as the "read" command does) whenever the ring holds fewer than WINDOW, so readings
# flow through flash, link and hub in a steady state instead of piling up.
# The heap high-water mark is gc.mem_alloc() sampled just before each loop's gc.collect().
# usage: steady_state.py N   (in a device folder: settings.json, board.json)
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

total = int(sys.argv[1])
app = boot()  # as main.py does: node/start.py is unloaded after
del boot
app.period_ms = 3600000  # readings come from read_now() below
WINDOW = 12
gc.collect()
base = gc.mem_alloc()
high = 0
wire = 0
progress_at = time.ticks_ms()
acked = 0
while app.seq < total or len(app.ring):
    if app.seq < total and len(app.ring) < WINDOW:
        app.read_now()
    sent = app.send_idx
    try:
        app.step()
    except Exception as exc:  # as App.run: the link failed, back off
        session.link_failed(app, exc)
    for i in range(sent, app.send_idx):  # the bytes each reading took on the wire
        channel, payload = app.ring.get(i) or (0, b"")
        wire += 2 + 2 + len(app.topics[channel]) + 2 + len(payload)  # the PUBLISH packet
    app.wdt.feed()
    high = max(high, gc.mem_alloc())
    gc.collect()
    if app.ring.first != acked:
        acked = app.ring.first
        progress_at = time.ticks_ms()
    elif time.ticks_diff(time.ticks_ms(), progress_at) > 30000:
        print("stuck", len(app.ring), app.ring.first, app.ring.next, app.send_idx, app.window, app.link.inflight, app.link.connected, app.last_error)
        sys.exit(3)
app.link.disconnect()
gc.collect()
print(json.dumps({"readings": app.seq, "heap_total": gc.mem_alloc() + gc.mem_free(),
                  "heap_base": base, "heap_high": high, "heap_free_end": gc.mem_free(),
                  "dropped": app.ring.dropped, "reconnects": app.reconnects,
                  "publish_bytes_per_reading": wire / app.seq, "puback_bytes": 4, "flash_bytes_per_reading": 52}))

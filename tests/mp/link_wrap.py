# Runs under the MicroPython unix port: drives node.link.Link directly against the real hub
# with N QoS 1 publishes (default 65,600), a window of them in flight, and prints what it saw:
# the packet ids around the wrap and how many publishes were acknowledged.
# usage: link_wrap.py HOST PORT [N]
import sys
import time

from node.link import Link

host, port = sys.argv[1], int(sys.argv[2])
total = int(sys.argv[3]) if len(sys.argv) > 3 else 65600
_WINDOW = 16  # publishes in flight at once
link = Link("wrap-1", host, port, keepalive_s=30, io_timeout_s=5, ack_timeout_s=5)
link.connect()
topic = b"d/wrap-1/t/n"
pids = {}
sent = 0
start = time.ticks_ms()
while sent < total or link.inflight:
    while sent < total and link.connected and len(link.inflight) < _WINDOW:
        sent += 1
        pid = link.publish(topic, b"%d" % sent, qos=1)
        if 65530 <= sent <= 65540:
            pids[sent] = pid
        if pid == 0:
            raise SystemExit("packet id 0 at publish %d" % sent)
    link.service()
    if time.ticks_diff(time.ticks_ms(), start) > 120000:
        raise SystemExit("stuck: %d in flight after %d sent" % (len(link.inflight), sent))
link.disconnect()
print("sent", sent, "unacked", len(link.inflight))
for n in sorted(pids):
    print("pid", n, pids[n])

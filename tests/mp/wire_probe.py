# Runs under the MicroPython unix port: drives node.link.Link and node/wire.py against a socket
# that records every write, and prints one line per case: its name and the bytes, in hex, that
# the firmware would have put on the wire. tests/firmware/test_wire.py checks them against
# hand-written MQTT 3.1.1 packets.
import binascii

from node import wire
from node.link import Link


class Recorder:
    # Stands in for the link's socket: keeps what is written, answers nothing.
    def __init__(self):
        self.out = bytearray()

    def write(self, buf, n=None):
        self.out.extend(buf if n is None else memoryview(buf)[:n])
        return len(buf) if n is None else n

    def close(self):
        pass


def link(client_id="dev-1", user=None, password=None, keepalive_s=30, will=None):
    lk = Link(client_id, "127.0.0.1", 1883, user, password, keepalive_s)
    if will is not None:
        lk.set_last_will(*will)
    lk.sock = Recorder()
    return lk


def show(name, lk):
    print(name, binascii.hexlify(lk.sock.out).decode())
    lk.sock.out = bytearray()


lk = link()
wire.send_connect(lk, True)
show("connect-clean", lk)

lk = link()
wire.send_connect(lk, False)
show("connect-persistent", lk)

lk = link("dev-2", "dev-2", "s3cret", 60, (b"d/dev-2/s", b"offline", True, 1))
wire.send_connect(lk, True)
show("connect-will-credentials", lk)

lk = link(keepalive_s=300)
wire.send_connect(lk, True)
show("connect-keepalive-300", lk)

lk = link()
lk.publish(b"d/dev-1/t/temp", b"21.5", qos=0)
show("publish-qos0", lk)
lk.publish(b"d/dev-1/t/temp", b"21.6", qos=1)
show("publish-qos1-pid1", lk)
lk.publish(b"d/dev-1/s", b"online", retain=True, qos=1)
show("publish-qos1-retain-pid2", lk)
wire.send_publish(lk, b"d/dev-1/t/temp", b"21.6", False, 1, 1, 1)
show("publish-qos1-dup", lk)
wire.send_publish(lk, b"d/dev-1/r", b"x" * 200, False, 1, 7, 0)
show("publish-200-bytes", lk)
wire.send_publish(lk, b"d/dev-1/m", b"", True, 0, 0, 0)
show("publish-empty-retained", lk)
lk.ping()
show("pingreq", lk)
wire.send_subscribe(lk, b"d/dev-1/c", 1, 3)
show("subscribe", lk)
recorder = lk.sock  # disconnect() lets go of its socket
lk.disconnect()
print("disconnect", binascii.hexlify(recorder.out).decode())

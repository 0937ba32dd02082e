# Runs under MicroPython in a device folder holding a complete download (ota/stage.*), for
# tests/firmware/test_ota_switch.py.
#   ota_probe.py install STAGE  installs, and stops dead (no clean-up after it) at STAGE
#   ota_probe.py boot           boot.py's pick, then prints the app folder, its version, and
#                               whether every file of a slot matches manifest.txt
import binascii
import hashlib
import json
import sys

import fake_machine

sys.modules["machine"] = fake_machine

import otaboot  # noqa: E402

if sys.argv[1] == "install":
    from node import otainst

    def cut(stage):
        if stage == sys.argv[2]:
            print("cut at", stage)
            sys.exit(0)  # dead: nothing after this stage runs

    otainst.hook = cut
    with open("ota/stage.json") as f:
        offer = json.load(f)
    print("install:", otainst.install(offer))
else:
    p = otaboot.pick()
    d = p.get("dir", "")
    import node

    complete = True
    if d:
        with open("manifest.txt") as f:
            for line in f:
                path, size, digest = line.split()
                try:
                    with open("ota/" + d + "/" + path, "rb") as g:
                        data = g.read()
                except OSError:
                    data = None
                if data is None or binascii.hexlify(hashlib.sha256(data).digest()).decode() != digest:
                    complete = False
    print(json.dumps({"dir": d, "version": node.VERSION, "complete": complete,
                      "trial": p.get("trial", 0)}))

# Stands in for MicroPython's `esp32` module on the unix port (host runs only: it lives in
# tools/unixport/, on the unix port's module path in tests, never in a bundle or on a board),
# for full firmware images over the air: two app slots and the bootloader's otadata, as files
# in the device folder's flash/ (created on first use).
#   flash/ota_0.bin, flash/ota_1.bin   the slots (bytes past a file's end read as erased, 0xFF)
#   flash/otadata.json                 {"boot": slot to boot, "running": slot booted,
#                                       "prev": the slot before set_boot, "state": new|pending|
#                                       valid|aborted}
# The bootloader's part, at each reset, is tools/unixport/esp32boot.py (run.py calls it before
# boot.py). Kept small: on a board this module is in the firmware, here it takes the app's heap.
# Flash semantics: writeblocks(n, buf) erases the blocks first; with an offset it only clears
# bits (as NOR flash does: erase with ioctl(6, n) first); set_boot refuses a slot without an
# image (the 0xE9 magic byte), as esp_ota_set_boot_partition validates it. A file flash/cut
# makes the process end right after the next set_boot (a power cut at that point, for tests).
import json
import os

_DIR = "flash"
_OTADATA = "flash/otadata.json"
SLOT_SIZE = int(os.getenv("FAKE_OTA_SLOT_SIZE", "1572864"))  # ESP32_GENERIC-OTA's 0x180000
CUT_EXIT = 99  # the process's exit code for a power cut the tests ask for (flash/cut)
_BUF = bytearray(256)
_MV = memoryview(_BUF)


def _otadata(d=None):
    if d is None:
        try:
            with open(_OTADATA) as f:
                return json.load(f)
        except OSError:
            return {"boot": "ota_0", "running": "ota_0", "prev": "ota_0", "state": "valid"}
    with open(_OTADATA + ".tmp", "w") as f:
        json.dump(d, f)
    os.rename(_OTADATA + ".tmp", _OTADATA)


class Partition:
    BOOT = 0
    RUNNING = 1

    def __init__(self, id, block_size=4096):
        if id in (0, 1):
            id = _otadata()["running" if id else "boot"]
        self.label = id
        self._bs = block_size
        self._f = None  # the slot's file, opened by the first read or write and kept open

    def info(self):
        n = self.label[-1] == "1"
        return (0, 0x10 + n, 0x10000 + n * SLOT_SIZE, SLOT_SIZE, self.label, False)

    def get_next_update(self):
        return Partition("ota_1" if self.label == "ota_0" else "ota_0")

    def _io(self, block, offset, size, src, mode):
        # mode 0 reads into src, 1 writes src (clearing bits only, as NOR flash does), 2 erases
        addr = block * self._bs + offset
        if addr < 0 or addr + size > SLOT_SIZE:
            raise OSError(22)  # EINVAL: outside the partition
        s, f = _BUF, self._f
        if f is None:
            try:
                os.mkdir(_DIR)
            except OSError:
                pass
            path = _DIR + "/" + self.label + ".bin"
            open(path, "ab").close()  # created empty: all erased
            f = self._f = open(path, "r+b")
        done = 0
        while done < size:  # through one small buffer: the fake allocates next to nothing
            n = min(len(s), size - done)
            f.seek(addr + done)
            got = f.readinto(s) or 0
            for i in range(n):  # past the file's end: never written, so erased
                b = s[i] if i < got and mode != 2 else 0xFF
                s[i] = b & src[done + i] if mode == 1 else b
            if mode == 0:
                for i in range(n):
                    src[done + i] = s[i]
            else:
                f.seek(addr + done)
                f.write(_MV[:n] if n < len(s) else s)
            done += n

    def readblocks(self, block, buf, offset=0):
        self._io(block, offset, len(buf), buf, 0)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # without an offset: the blocks are erased first
            for b in range((len(buf) + self._bs - 1) // self._bs):
                self._io(block + b, 0, self._bs, None, 2)
        self._io(block, offset or 0, len(buf), buf, 1)

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return SLOT_SIZE // self._bs
        if cmd == 5:
            return self._bs
        if cmd == 6:  # erase one block
            self._io(arg, 0, self._bs, None, 2)
        return 0

    def set_boot(self):
        head = bytearray(1)
        self.readblocks(0, head)
        if head[0] != 0xE9:
            raise OSError(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED: no app image there
        d = _otadata()
        d.update(prev=d["running"], boot=self.label, state="new")
        _otadata(d)
        try:  # tests: flash/cut asks for a power cut right here (once)
            os.remove(_DIR + "/cut")
        except OSError:
            return
        print("power cut after set_boot")
        import sys

        sys.exit(CUT_EXIT)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        d = _otadata()
        if d["state"] == "pending":
            d["state"] = "valid"
            _otadata(d)

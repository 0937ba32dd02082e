# One boot of the virtual board (tools/vboard.py starts one unix-port process per boot).
# Installs the fakes and the modules a stock ESP32 build has built in or frozen, makes the board
# folder the filesystem root ("/", as the flash is on a board), runs boot.py, and main.py unless
# the board was soft-reset from the raw REPL, then serves the REPL on stdin/stdout (vb_repl).
# usage: vb_boot.py FOLDER friendly|raw LIBDIR
import os
import sys

import fake_machine
import fake_network
import vb_micropython

sys.modules["micropython"] = vb_micropython
sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network
import dht  # noqa: E402,F401  (built into ESP32 firmware)
import ds18x20  # noqa: E402,F401
import onewire  # noqa: E402,F401
import umqtt.simple  # noqa: E402,F401  (frozen into stock ESP32 firmware)

EXIT_SOFT = 80  # + 1 when the REPL was in raw mode: tools/vboard.py boots again in that mode
_folder, _mode, _lib = sys.argv[1], sys.argv[2], sys.argv[3]
os.umount("/")
os.mount(os.VfsPosix(_folder), "/")
os.chdir("/")
sys.path[:] = ["", "/lib"]
_ns = {"__name__": "__main__"}


def soft_reboot(raw):
    sys.stdout.buffer.write(b"MPY: soft reboot\r\n")
    sys.exit(EXIT_SOFT + raw)


def run_file(name):
    # As pyexec_file(): True when the file ran to its end (or does not exist).
    try:
        os.stat(name)
    except OSError:
        return True
    vb_micropython.kbd_intr(3)
    try:
        with open(name) as f:
            exec(f.read(), _ns)
        return True
    except SystemExit as e:
        if e.args and e.args[0] in (fake_machine.EXIT_REBOOT, fake_machine.EXIT_DEEPSLEEP):
            raise
        soft_reboot(_mode == "raw")
    except BaseException as e:  # noqa: B036  KeyboardInterrupt too: back to the REPL
        sys.print_exception(e)
        return False
    finally:
        vb_micropython.kbd_intr(-1)


if run_file("boot.py") and _mode == "friendly":
    run_file("main.py")
del run_file
os.mount(os.VfsPosix(_lib), "/.vb")  # only while the REPL module loads: not part of the board's fs
sys.path.append("/.vb")
import vb_repl  # noqa: E402

sys.path.pop()
os.umount("/.vb")
soft_reboot(vb_repl.serve(_ns, _mode == "raw"))

# Launcher: hold the safe-mode pin at reset to get a REPL without the app running.
# An app on trial (a new over-the-air update) that raises makes the next boot the old app's.
import gc
import os
import time

try:
    from node import hw

    if hw.safe_mode():
        print("safe mode: app not started")
    else:
        time.sleep_ms(hw.START_DELAY_MS)  # a window for Ctrl-C before the app takes over
        try:
            staged = os.stat("ota/stage.json")  # an app update: installed before the app runs
        except OSError:
            staged = None
        if staged:
            import sys

            import node
            from node import otainst

            otainst.at_boot()  # reboots into the new app, unless it is refused or incomplete
            del sys.modules["node.otainst"], node.otainst, otainst
        gc.collect()
        from node import app

        gc.collect()

        app.main()
except Exception as exc:
    import otaboot

    if not otaboot.failed("crashed: %r" % (exc,)):
        raise
    import machine

    print("app on trial crashed (%r): back to the previous app" % (exc,))
    machine.reset()

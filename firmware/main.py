# Launcher: hold the safe-mode pin at reset to get a REPL without the app running.
import gc
import time

from node import hw

if hw.safe_mode():
    print("safe mode: app not started")
else:
    time.sleep_ms(hw.START_DELAY_MS)  # a window for Ctrl-C before the app takes over
    gc.collect()
    from node import app

    gc.collect()

    app.main()

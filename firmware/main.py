# Launcher: node/start.py checks the safe-mode pin (hold it at reset to get a REPL without the
# app running), installs a downloaded app update, builds the app and is unloaded; the app runs.
# An app on trial (a new over-the-air update) that raises makes the next boot the old app's.
try:
    from node.start import boot

    app = boot()  # None in safe mode
    del boot
    if app is not None:
        app.run()
except Exception as exc:
    import otaboot

    if not otaboot.failed("crashed: %r" % (exc,)):
        raise
    import machine

    print("app on trial crashed (%r): back to the previous app" % (exc,))
    machine.reset()

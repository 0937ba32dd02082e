# A deep-sleep wake that reached no hub while a settings trial runs (node/sleep.py). Each wake
# tries every address once, so the trial counts wakes in its marker; after TRIAL_WAKES the old
# settings come back (as node/trial.roll_back does) for the next wake, which answers the
# settings command with the error. Loading node/trial and node/config here does not fit in
# the heap a failed wake leaves, so the file names are theirs, repeated (a test checks them).
import json
import os

TRIAL_WAKES = 3
SETTINGS_FILE = "settings.json"
BACKUP_FILE = "settings.bak"
TRIAL_FILE = "trial.json"


def failed(app):
    marker = app.trial
    if marker.get("state") != "trying":
        return
    marker["wakes"] = marker.get("wakes", 0) + 1
    if marker["wakes"] >= TRIAL_WAKES:
        os.remove(SETTINGS_FILE)
        os.rename(BACKUP_FILE, SETTINGS_FILE)
        marker["state"] = "rolled back"
        marker["error"] = "rolled back: no connection with the new settings (%s)" % app.last_error
    with open(TRIAL_FILE, "w") as f:
        json.dump(marker, f)

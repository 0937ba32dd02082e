# The settings trial: an update is validated, written with the old file kept as a backup,
# and marked in trial.json; the device reboots into it. Once it reconnects with the new
# settings the trial ends (the backup goes); after _TRIAL_ATTEMPTS failed connects (node/session)
# the backup comes back and the device reboots into the old settings. Either way the command
# is answered after the reboot. Power lost mid-way: config.load falls back to the backup.
import gc
import json
import os

from node import config
from node.config import BACKUP_FILE, SETTINGS_FILE, TRIAL_FILE, read_json


def handle(app, cmd):
    # {"op": "settings", "id", "set"} (App.handle_later). Answered after the reboot: ok once the
    # device reconnects with the new settings, or an error once it has rolled back to the old
    # ones; refused at once (nothing changed) when the update does not pass config.check.
    gc.collect()  # what loading this module and node/config.py left behind
    try:
        begin_trial(cmd["id"], cmd.get("set"))
    except config.ConfigError as exc:
        app.reply(cmd["id"], False, error=str(exc))
        return
    app.reboot_soon(0, 200)


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _drop(settings, keys):
    for key in keys:
        if key in settings:
            del settings[key]


def begin_trial(command_id, changes):
    # Validates and persists a settings update; the old file stays as the backup. Returns
    # the new settings. Raises ConfigError (and changes nothing) for bad input.
    old = read_json(SETTINGS_FILE)
    if not isinstance(changes, dict) or not changes:
        raise config.ConfigError("'set' must be an object of settings to change")
    if "id" in changes and changes["id"] != old.get("id"):
        raise config.ConfigError("setting 'id' cannot change over the air")
    new = dict(old)
    # The update's form of the hub address replaces the stored one: `hubs`, or hub_host/hub_port.
    if "hubs" in changes:
        _drop(new, ("hub_host", "hub_port"))
    elif "hub_host" in changes or "hub_port" in changes:
        _drop(new, ("hubs",))
    new.update(changes)
    config.check(new, "the update")
    _write_json(SETTINGS_FILE + ".new", new)
    _remove(BACKUP_FILE)
    os.rename(SETTINGS_FILE, BACKUP_FILE)
    os.rename(SETTINGS_FILE + ".new", SETTINGS_FILE)
    _write_json(TRIAL_FILE, {"id": command_id, "state": "trying"})
    return new


def trial():
    # The pending settings trial ({"id", "state", ...}) or None.
    return read_json(TRIAL_FILE)


def roll_back(error):
    marker = trial()
    _remove(SETTINGS_FILE)
    os.rename(BACKUP_FILE, SETTINGS_FILE)
    marker["state"] = "rolled back"
    marker["error"] = error
    _write_json(TRIAL_FILE, marker)


def end_trial():
    _remove(TRIAL_FILE)
    if read_json(SETTINGS_FILE) is not None:
        _remove(BACKUP_FILE)

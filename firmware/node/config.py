# Settings: defaults, merged with the board file and the device's settings file, once.
# Also the settings trial: an update is written with the old file kept as a backup and a
# marker; the app keeps the new settings once it reconnects with them, else rolls back.
import json
import os

BOARD_FILE = "board.json"
SETTINGS_FILE = "settings.json"
BACKUP_FILE = "settings.bak"
TRIAL_FILE = "trial.json"

DEFAULTS = {
    "id": None,  # device id, required
    "hub_host": "127.0.0.1",
    "hub_port": 1883,
    "username": None,
    "password": None,
    "period_s": 5,
    "keepalive_s": 30,
    "io_timeout_s": 5,
    "ack_timeout_s": 10,  # resend an unacknowledged QoS 1 publish (DUP) after this long
    "backoff_min_ms": 1000,  # reconnect backoff: doubles from min to max, with jitter
    "backoff_max_ms": 60000,
    "queue_len": 1000,  # readings the flash ring holds while the hub is unreachable
    "meta_s": 300,  # health (d/<id>/m) refresh period
    "wifi_ssid": None,
    "wifi_password": None,
}
# (low, high) for integer settings; the others are text or null.
_RANGES = {
    "hub_port": (1, 65535),
    "period_s": (1, 86400),
    "keepalive_s": (1, 65535),
    "io_timeout_s": (1, 60),
    "ack_timeout_s": (1, 3600),
    "backoff_min_ms": (50, 3600000),
    "backoff_max_ms": (50, 3600000),
    "queue_len": (8, 100000),
    "meta_s": (1, 86400),
}
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


class ConfigError(Exception):
    pass


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def check(settings, where=SETTINGS_FILE):
    # Returns the settings merged over DEFAULTS, or raises ConfigError naming the bad key.
    if not isinstance(settings, dict):
        raise ConfigError("%s must hold a JSON object" % where)
    cfg = dict(DEFAULTS)
    for key in settings:
        if key not in DEFAULTS:
            raise ConfigError("unknown setting %r in %s" % (key, where))
        value = settings[key]
        if key in _RANGES:
            low, high = _RANGES[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError("setting %r must be a whole number from %d to %d"
                                  % (key, low, high))
        elif value is not None and not isinstance(value, str):
            raise ConfigError("setting %r must be text" % key)
        cfg[key] = value
    device = cfg["id"]
    if not device or len(device) > 32 or any(c not in _ID_CHARS for c in device):
        raise ConfigError("setting 'id' is required: 1 to 32 of a-z 0-9 - _")
    if not cfg["hub_host"]:
        raise ConfigError("setting 'hub_host' is required")
    if cfg["backoff_max_ms"] < cfg["backoff_min_ms"]:
        raise ConfigError("setting 'backoff_max_ms' must not be below 'backoff_min_ms'")
    return cfg


def load(settings_path=SETTINGS_FILE, board_path=BOARD_FILE):
    board = _read_json(board_path) or {}
    settings = _read_json(settings_path)
    if settings is None:
        settings = _read_json(BACKUP_FILE)  # power lost in the middle of an update
    if settings is None:
        raise ConfigError("no %s: deploy the device's settings first" % settings_path)
    cfg = check(settings, settings_path)
    cfg["board"] = board
    return cfg


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def begin_trial(command_id, changes):
    # Validates and persists a settings update; the old file stays as the backup. Returns
    # the new settings. Raises ConfigError (and changes nothing) for bad input.
    old = _read_json(SETTINGS_FILE)
    if not isinstance(changes, dict) or not changes:
        raise ConfigError("'set' must be an object of settings to change")
    if "id" in changes and changes["id"] != old.get("id"):
        raise ConfigError("setting 'id' cannot change over the air")
    new = dict(old)
    new.update(changes)
    check(new, "the update")
    _write_json(SETTINGS_FILE + ".new", new)
    _remove(BACKUP_FILE)
    os.rename(SETTINGS_FILE, BACKUP_FILE)
    os.rename(SETTINGS_FILE + ".new", SETTINGS_FILE)
    _write_json(TRIAL_FILE, {"id": command_id, "state": "trying"})
    return new


def trial():
    # The pending settings trial ({"id", "state", ...}) or None.
    return _read_json(TRIAL_FILE)


def roll_back(error):
    marker = trial()
    _remove(SETTINGS_FILE)
    os.rename(BACKUP_FILE, SETTINGS_FILE)
    marker["state"] = "rolled back"
    marker["error"] = error
    _write_json(TRIAL_FILE, marker)


def end_trial():
    _remove(TRIAL_FILE)
    if _read_json(SETTINGS_FILE) is not None:
        _remove(BACKUP_FILE)

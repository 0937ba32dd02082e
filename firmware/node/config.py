# Settings: defaults, merged with the board file and the device's settings file, once, at boot
# (node/app.load); then this module is unloaded: its checks come back for a settings update
# over the air (node/trial.py, imported when needed) and go again after it.
import json

BOARD_FILE = "board.json"
SETTINGS_FILE = "settings.json"
BACKUP_FILE = "settings.bak"
TRIAL_FILE = "trial.json"

DEFAULTS = {
    "id": None,  # device id, required
    "hubs": None,  # ["HOST:PORT", ...]: tried in turn (node/session.py); or, for one hub:
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
    "tls": False,  # connect over TLS, verifying the hub with ca.der
    "ota_trial_s": 120,  # a new app (node/ota.py) must report healthy to the hub within this
}
_FLAGS = ("tls",)
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
    "ota_trial_s": (5, 3600),
}
# hub/topics.py DEVICE_ID_RE, ^[a-z0-9][a-z0-9_-]{0,31}$ (MicroPython's re has no {m,n});
# tests/firmware/test_device_id.py runs both on the same cases.
_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_FIRST + "-_"


class ConfigError(Exception):
    pass


def valid_id(device):
    # A letter or digit, then up to 31 of a-z 0-9 - _ (the hub's topic grammar).
    if not isinstance(device, str) or not 0 < len(device) <= 32 or device[0] not in _ID_FIRST:
        return False
    for c in device:
        if c not in _ID_CHARS:
            return False
    return True


def _hubs(settings, cfg):
    # The hub addresses, in order: `hubs`, or `hub_host`/`hub_port` as a list of one.
    if settings.get("hubs") is None:
        if not cfg["hub_host"]:
            raise ConfigError("setting 'hub_host' is required")
        return [(cfg["hub_host"], cfg["hub_port"])]
    import node
    from node import hubs  # lazily: needed at boot (and for a settings update) only

    try:
        return hubs.check(settings)
    finally:  # its code need not stay in a 64 KB heap
        node.drop("hubs")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)


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
        elif key == "hubs":
            pass  # checked whole below
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ConfigError("setting %r must be true or false" % key)
        elif value is not None and not isinstance(value, str):
            raise ConfigError("setting %r must be text" % key)
        cfg[key] = value
    if not valid_id(cfg["id"]):
        raise ConfigError("setting 'id' is required: 1 to 32 of a-z 0-9 - _, the first a letter"
                          " or digit")
    cfg["hubs"] = _hubs(settings, cfg)
    if cfg["backoff_max_ms"] < cfg["backoff_min_ms"]:
        raise ConfigError("setting 'backoff_max_ms' must not be below 'backoff_min_ms'")
    return cfg


def load(settings_path=SETTINGS_FILE, board_path=BOARD_FILE):
    board = read_json(board_path) or {}
    settings = read_json(settings_path)
    if settings is None:
        settings = read_json(BACKUP_FILE)  # power lost in the middle of an update
    if settings is None:
        raise ConfigError("no %s: deploy the device's settings first" % settings_path)
    cfg = check(settings, settings_path)
    cfg["board"] = board
    cfg["trial"] = read_json(TRIAL_FILE)  # a settings update on trial (node/trial.py)
    return cfg

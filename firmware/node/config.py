# Settings: defaults, merged with the board file and the device's settings file, once.
import json

BOARD_FILE = "board.json"
SETTINGS_FILE = "settings.json"

DEFAULTS = {
    "id": None,  # device id, required
    "hub_host": "127.0.0.1",
    "hub_port": 1883,
    "username": None,
    "password": None,
    "period_s": 5,
    "keepalive_s": 30,
    "io_timeout_s": 5,
    "wifi_ssid": None,
    "wifi_password": None,
}


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


def load(settings_path=SETTINGS_FILE, board_path=BOARD_FILE):
    board = _read_json(board_path) or {}
    settings = _read_json(settings_path)
    if settings is None:
        raise ConfigError("no %s: deploy the device's settings first" % settings_path)
    cfg = dict(DEFAULTS)
    for key in settings:
        if key not in DEFAULTS:
            raise ConfigError("unknown setting %r in %s" % (key, settings_path))
        cfg[key] = settings[key]
    if not cfg["id"]:
        raise ConfigError("setting 'id' is required")
    if cfg["period_s"] <= 0 or cfg["keepalive_s"] <= 0:
        raise ConfigError("period_s and keepalive_s must be positive")
    cfg["board"] = board
    return cfg

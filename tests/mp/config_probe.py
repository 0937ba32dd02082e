# Runs the firmware's settings check (node/config.check) on each case of a JSON file (argv[1])
# and prints one JSON line per case: ["ok", [[host, port], ...]] or ["error", message].
import json
import sys

from node import config

with open(sys.argv[1]) as f:
    cases = json.load(f)
for settings in cases:
    try:
        cfg = config.check(settings)
        print(json.dumps(["ok", [[host, port] for host, port in cfg["hubs"]]]))
    except config.ConfigError as exc:
        print(json.dumps(["error", str(exc)]))

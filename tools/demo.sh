#!/usr/bin/env bash
# The main job: the hub with a simulated fleet; prints how to open the console. Ctrl-C stops
# everything and exits 0. On a data dir without console accounts it creates the admin account
# `admin` and prints its one-time password.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT="${1:-3}"
PY="$ROOT/.venv/bin/python"
DATA="${DATA_DIR:-data}"
cd "$ROOT"
# shellcheck source=tools/demolib.sh
. "$ROOT/tools/demolib.sh"

ready_file=$(mktemp)
cleanup() {
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
    rm -f "$ready_file"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopped"; exit 0' INT TERM

demo_admin_login "$DATA"

"$PY" -m hub serve --host "${HUB_HOST:-127.0.0.1}" --mqtt-port "${MQTT_PORT:-0}" \
    --ws-port "${WS_PORT:-0}" --data-dir "$DATA" >"$ready_file" &
hub_pid=$!
demo_wait_ready "demo: the hub" "$hub_pid" "$ready_file" 100
mqtt=$(demo_field mqtt)
echo "$ready"
if [[ "$ready" == *" wss="* ]]; then
    echo "console: https://$(demo_field wss)/ (the browser trusts $DATA/certs/ca.pem)"
else
    echo "console: http://$(demo_field http)/"
fi
demo_login_hint "$DATA"
"$PY" -m tools sim --hub "mqtt://$mqtt" --count "$COUNT" --data-dir "$DATA" &
sim_pid=$!
wait "$sim_pid"

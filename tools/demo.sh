#!/usr/bin/env bash
# The main job: the hub with a simulated fleet; prints the dashboard address. Ctrl-C stops all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT="${1:-3}"
PY="$ROOT/.venv/bin/python"
cd "$ROOT"

ready_file=$(mktemp)
cleanup() {
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
    rm -f "$ready_file"
}
trap cleanup EXIT INT TERM

"$PY" -m hub serve --host "${HUB_HOST:-127.0.0.1}" --mqtt-port "${MQTT_PORT:-0}" \
    --ws-port "${WS_PORT:-0}" --data-dir "${DATA_DIR:-data}" >"$ready_file" &
hub_pid=$!
for _ in $(seq 100); do
    grep -q '^ready ' "$ready_file" && break
    kill -0 "$hub_pid" 2>/dev/null || { echo "demo: the hub did not start" >&2; exit 1; }
    sleep 0.1
done
ready=$(grep '^ready ' "$ready_file") || { echo "demo: the hub did not report ready" >&2; exit 1; }
mqtt=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
http=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$ready")
echo "$ready"
echo "dashboard: http://$http/"
"$PY" -m tools sim --hub "mqtt://$mqtt" --count "$COUNT" --data-dir "${DATA_DIR:-data}" &
sim_pid=$!
wait "$sim_pid"

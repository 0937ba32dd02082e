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

ready_file=$(mktemp)
cleanup() {
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
    rm -f "$ready_file"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopped"; exit 0' INT TERM

login=""
if [ "$("$PY" -m hub user list --data-dir "$DATA" 2>/dev/null | grep -vc -e '^NAME' -e '^(no accounts' || true)" = 0 ]; then
    added=$("$PY" -m hub user add admin --role admin --data-dir "$DATA")
    login="name: admin, one-time password: ${added##*one-time password: }"
fi

"$PY" -m hub serve --host "${HUB_HOST:-127.0.0.1}" --mqtt-port "${MQTT_PORT:-0}" \
    --ws-port "${WS_PORT:-0}" --data-dir "$DATA" >"$ready_file" &
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
if [[ "$ready" == *" wss="* ]]; then
    wss=$(sed -E 's/.* wss=([^ ]+).*/\1/' <<<"$ready")
    echo "console: https://$wss/ (the browser trusts $DATA/certs/ca.pem)"
else
    echo "console: http://$http/"
fi
if [ -n "$login" ]; then
    echo "log in as $login"
    echo "(change it: .venv/bin/python -m hub user passwd admin --data-dir $DATA)"
else
    echo "log in with an account of $DATA (.venv/bin/python -m hub user list --data-dir $DATA)"
fi
"$PY" -m tools sim --hub "mqtt://$mqtt" --count "$COUNT" --data-dir "$DATA" &
sim_pid=$!
wait "$sim_pid"

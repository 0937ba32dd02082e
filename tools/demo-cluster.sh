#!/usr/bin/env bash
# Cluster mode's demo: a local 3-node RabbitMQ cluster, a hub in cluster mode against it (the
# nodes' auth backend), a simulated fleet spread over the nodes (each device knows them all),
# and how to open the console. Ctrl-C stops everything and exits 0. On a data dir without
# console accounts it creates the admin account `admin` and prints its one-time password.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT="${1:-3}"
NODES="${CLUSTER_NODES:-3}"
PY="$ROOT/.venv/bin/python"
DATA="${DATA_DIR:-data-cluster}"
cd "$ROOT"

ready_file=$(mktemp)
cleanup() {
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    # The launcher stops the hub, then every node and epmd, by their PIDs.
    [ -n "${cluster_pid:-}" ] && kill "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null || true
    rm -f "$ready_file"
}
trap cleanup EXIT
trap 'echo; echo "demo-cluster: stopped"; exit 0' INT TERM

login=""
if [ "$("$PY" -m hub user list --data-dir "$DATA" 2>/dev/null | grep -vc -e '^NAME' -e '^(no accounts' || true)" = 0 ]; then
    added=$("$PY" -m hub user add admin --role admin --data-dir "$DATA")
    login="name: admin, one-time password: ${added##*one-time password: }"
fi

"$PY" -m tools.cluster --nodes "$NODES" --hub --data-dir "$DATA" >"$ready_file" &
cluster_pid=$!
echo "demo-cluster: starting $NODES RabbitMQ nodes and the hub (30-60 s) ..."
for _ in $(seq 1800); do
    grep -q '^ready ' "$ready_file" && break
    kill -0 "$cluster_pid" 2>/dev/null || { echo "demo-cluster: the cluster did not start" >&2; exit 1; }
    sleep 0.1
done
ready=$(grep '^ready ' "$ready_file") || { echo "demo-cluster: no ready line" >&2; exit 1; }
mqtt=$(sed -E 's/.* mqtt=([^ ]+).*/\1/' <<<"$ready")
http=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$ready")
echo "$ready"
echo "console: http://$http/"
if [ -n "$login" ]; then
    echo "log in as $login"
else
    echo "log in with an account of $DATA (.venv/bin/python -m hub user list --data-dir $DATA)"
fi
hubs=$(tr ',' '\n' <<<"$mqtt" | sed 's|^|mqtt://|' | paste -sd, -)
"$PY" -m tools sim --hub "$hubs" --count "$COUNT" --data-dir "$DATA" &
sim_pid=$!
wait "$sim_pid"

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
# shellcheck source=tools/demolib.sh
. "$ROOT/tools/demolib.sh"

ready_file=$(mktemp)
cleanup() {
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    # The launcher stops the hub, then every node and epmd, by their PIDs.
    [ -n "${cluster_pid:-}" ] && kill "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null || true
    rm -f "$ready_file"
}
trap cleanup EXIT
trap 'echo; echo "demo-cluster: stopped"; exit 0' INT TERM

demo_admin_login "$DATA"

"$PY" -m tools.cluster --nodes "$NODES" --hub --data-dir "$DATA" >"$ready_file" &
cluster_pid=$!
echo "demo-cluster: starting $NODES RabbitMQ nodes and the hub (30-60 s) ..."
demo_wait_ready "demo-cluster: the cluster" "$cluster_pid" "$ready_file" 1800
mqtt=$(demo_field mqtt)
echo "$ready"
echo "console: http://$(demo_field http)/"
demo_login_hint "$DATA"
hubs=$(tr ',' '\n' <<<"$mqtt" | sed 's|^|mqtt://|' | paste -sd, -)
"$PY" -m tools sim --hub "$hubs" --count "$COUNT" --data-dir "$DATA" &
sim_pid=$!
wait "$sim_pid"

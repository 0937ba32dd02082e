# Shared by tools/demo.sh and tools/demo-cluster.sh (sourced, not run): the console account, the
# wait for a ready line and the lines that tell the user how to log in.

# demo_admin_login DATA: on a data dir without console accounts, create `admin` and set $login to
# its one-time password line; otherwise leave $login empty.
demo_admin_login() {
    login=""
    if [ "$("$PY" -m hub user list --data-dir "$1" 2>/dev/null | grep -vc -e '^NAME' -e '^(no accounts' || true)" = 0 ]; then
        local added
        added=$("$PY" -m hub user add admin --role admin --data-dir "$1")
        login="name: admin, one-time password: ${added##*one-time password: }"
    fi
}

# demo_wait_ready NAME PID FILE TENTHS: wait up to TENTHS tenths of a second for PID to write a
# `ready ...` line to FILE; set $ready to it, or say why not and exit 1.
demo_wait_ready() {
    for _ in $(seq "$4"); do
        grep -q '^ready ' "$3" && break
        kill -0 "$2" 2>/dev/null || { echo "$1: it did not start (see above)" >&2; exit 1; }
        sleep 0.1
    done
    ready=$(grep '^ready ' "$3") || { echo "$1: no ready line after $(($4 / 10)) s" >&2; exit 1; }
}

# demo_field NAME: the value of ` NAME=` in $ready.
demo_field() {
    grep -oE "(^| )$1=[^ ]+" <<<"$ready" | head -n 1 | sed 's/^.*=//'
}

# demo_login_hint DATA: how to log in to the console.
demo_login_hint() {
    if [ -n "$login" ]; then
        echo "log in as $login"
        echo "(change it: .venv/bin/python -m hub user passwd admin --data-dir $1)"
    else
        echo "log in with an account of $1 (.venv/bin/python -m hub user list --data-dir $1)"
    fi
}

#!/usr/bin/env bash
# One idempotent set-up step for a fresh Debian machine: system packages, the MicroPython
# unix port (built from Debian trixie's source package), umqtt.simple for host runs, and the
# project's virtualenv. Every step is skipped when its result is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build"
MP_DIR="$BUILD/micropython"
MP_BIN="$BUILD/bin/micropython"
MPLIB="$BUILD/mplib"
VENV="$ROOT/.venv"
UMQTT_VERSION="1.3.4"
APT_PACKAGES=(dpkg-dev libffi-dev libmbedtls-dev pkgconf mosquitto mosquitto-clients chromium postgresql
    rabbitmq-server)

log() { printf 'bootstrap: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q >/dev/null
        apt_updated=1
    fi
}

install_system_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    # Node.js may come from elsewhere (the machine image): only install it when it is absent.
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing system packages: ${missing[*]}"
        apt_update_once
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

# The archive URI this machine already uses for Debian itself (deb822 or one-line format).
debian_archive_uri() {
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' \
            /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { log "error: no Debian archive URI found in the apt sources"; exit 2; }
    printf '%s' "$uri"
}

add_trixie_sources() {
    local list=/etc/apt/sources.list.d/trixie-src.sources
    [ -f "$list" ] && return
    log "adding a deb-src entry for trixie main (sources only)"
    as_root tee "$list" >/dev/null <<SRC
Types: deb-src
URIs: $(debian_archive_uri)
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=0
}

build_micropython() {
    [ -x "$MP_BIN" ] && return
    add_trixie_sources
    apt_update_once
    mkdir -p "$BUILD/src" "$BUILD/bin"
    if [ ! -d "$MP_DIR" ]; then
        log "fetching the micropython source package"
        (cd "$BUILD/src" && apt-get source -q micropython >/dev/null 2>&1)
        local tree
        tree=$(find "$BUILD/src" -maxdepth 1 -type d -name 'micropython-*' | head -n 1)
        [ -n "$tree" ] || { log "error: apt-get source micropython produced no tree"; exit 2; }
        mv "$tree" "$MP_DIR"
    fi
    log "building mpy-cross and the unix port"
    make -s -C "$MP_DIR/mpy-cross" -j"$(nproc)" >"$BUILD/mpy-cross.log" 2>&1
    make -s -C "$MP_DIR/ports/unix" -j"$(nproc)" MICROPY_PY_BTREE=0 \
        FROZEN_MANIFEST=../../debian/config/manifest.py >"$BUILD/unix-port.log" 2>&1 \
        || { tail -n 30 "$BUILD/unix-port.log" >&2; exit 1; }
    cp "$MP_DIR/ports/unix/build-standard/micropython" "$MP_BIN"
    cp "$MP_DIR/mpy-cross/build/mpy-cross" "$BUILD/bin/mpy-cross"
}

install_venv() {
    local stamp="$VENV/.installed"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
        return
    fi
    log "creating the virtualenv and installing the project"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    mkdir -p "$BUILD"
    { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$ROOT[test]"; } \
        >"$BUILD/pip.log" 2>&1 || { tail -n 30 "$BUILD/pip.log" >&2; exit 1; }
    touch "$stamp"
}

fetch_umqtt() {
    [ -f "$MPLIB/umqtt/simple.py" ] && return
    log "fetching micropython-umqtt.simple $UMQTT_VERSION for host runs"
    local tmp
    tmp=$(mktemp -d)
    # The 2017 sdist has no setup.py: pip downloads and unpacks it into its temporary build
    # folder, then fails to build it; --no-clean leaves that unpacked tree behind.
    TMPDIR="$tmp" "$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-clean \
        -d "$tmp/dl" "micropython-umqtt.simple==$UMQTT_VERSION" >/dev/null 2>&1 || true
    local source
    source=$(find "$tmp" -path '*/umqtt/simple.py' | head -n 1)
    [ -n "$source" ] || { log "error: could not download micropython-umqtt.simple"; exit 2; }
    mkdir -p "$MPLIB/umqtt"
    cp "$source" "$MPLIB/umqtt/simple.py"
    : >"$MPLIB/umqtt/__init__.py"
    rm -rf "$tmp"
}

install_browser_libraries() {
    local stamp="$ROOT/node_modules/.installed"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/package-lock.json" ]; then
        return
    fi
    log "installing browser libraries from npm (package-lock.json)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$stamp"
}

install_system_packages
build_micropython
install_venv
fetch_umqtt
install_browser_libraries
log "ready"

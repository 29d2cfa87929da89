#!/bin/sh
# Starts a throw-away Docker registry on a loopback port and prints its address.
#
#   export EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)
#   export EMPIRE_TEST_REGISTRY_BASIC=$(scripts/registry.sh 5001 --htpasswd empire:secret)
#
# Idempotent: installs Debian's docker-registry (and apache2-utils for htpasswd) when
# missing, writes the registry's own config and storage under /var/tmp (not the system
# service's), and starts it only when nothing answers on the port yet. With
# `--htpasswd USER:PASS` the registry requires basic auth with those credentials (a
# registry already running on the port is restarted when its credentials changed).
#
# The registry speaks plain HTTP on 127.0.0.1 only: the Docker engine treats registries
# on 127.0.0.0/8 as insecure by default, so it pushes and pulls without TLS. It is for
# tests on this machine. Progress goes to stderr; stdout is the address alone.
set -eu

PORT=5000
HTPASSWD=""
while [ $# -gt 0 ]; do
    case "$1" in
    --htpasswd)
        [ $# -ge 2 ] || { echo "usage: $0 [PORT] [--htpasswd USER:PASS]" >&2; exit 2; }
        HTPASSWD=$2
        shift 2
        ;;
    --htpasswd=*)
        HTPASSWD=${1#--htpasswd=}
        shift
        ;;
    [0-9]*)
        PORT=$1
        shift
        ;;
    *)
        echo "usage: $0 [PORT] [--htpasswd USER:PASS]" >&2
        exit 2
        ;;
    esac
done

ADDR="127.0.0.1:$PORT"
DIR=/var/tmp/empire-registry-$PORT
CONFIG=$DIR/config.yml
PIDFILE=$DIR/registry.pid
LOG=$DIR/registry.log
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf -- '-----> %s\n' "$*" >&2; }

install_package() {
    log "Installing Debian's $1"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >&2
}

command -v docker-registry >/dev/null 2>&1 || install_package docker-registry
command -v curl >/dev/null 2>&1 || install_package curl
if [ -n "$HTPASSWD" ]; then
    command -v htpasswd >/dev/null 2>&1 || install_package apache2-utils
    case "$HTPASSWD" in
    *:*) ;;
    *) echo "--htpasswd wants USER:PASS, got $HTPASSWD" >&2; exit 2 ;;
    esac
fi

mkdir -p "$DIR/storage"

# The auth section: a fresh htpasswd file when credentials are wanted. The file is
# rewritten only when the credentials changed (bcrypt salts differ on every run).
AUTH=""
WANT_AUTH="none"
if [ -n "$HTPASSWD" ]; then
    WANT_AUTH=$(printf '%s' "$HTPASSWD" | sha256sum | cut -c1-16)
    if [ "$(cat "$DIR/auth.id" 2>/dev/null || true)" != "$WANT_AUTH" ]; then
        htpasswd -Bbn "${HTPASSWD%%:*}" "${HTPASSWD#*:}" >"$DIR/htpasswd"
    fi
    AUTH="auth:
  htpasswd:
    realm: empire-test-registry
    path: $DIR/htpasswd"
fi

cat >"$CONFIG.new" <<CONF
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
$AUTH
CONF

running() {
    [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
    # /v2/ answers 200 without auth and 401 with it: either means it is up.
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/v2/" 2>/dev/null || true)
    [ "$code" = 200 ] || [ "$code" = 401 ]
}

# A registry of ours with other settings (auth added, removed or changed) is restarted.
if running && { ! cmp -s "$CONFIG.new" "$CONFIG" || [ "$(cat "$DIR/auth.id" 2>/dev/null || true)" != "$WANT_AUTH" ]; }; then
    log "Restarting the registry on $ADDR with new settings"
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
fi
mv "$CONFIG.new" "$CONFIG"
echo "$WANT_AUTH" >"$DIR/auth.id"

if ! running; then
    if answers; then
        echo "something else already answers on $ADDR; pick another port" >&2
        exit 1
    fi
    log "Starting a registry on $ADDR (storage in $DIR/storage)"
    # setsid: the registry outlives this script and the shell that ran it.
    setsid docker-registry serve "$CONFIG" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
fi

tries=0
until answers; do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ] || ! running; then
        echo "the registry did not start on $ADDR; see $LOG" >&2
        exit 1
    fi
    sleep 0.1
done

echo "$ADDR"

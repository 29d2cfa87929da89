#!/bin/sh
# Starts moto, the AWS API emulator, on a loopback port and prints its URL.
#
#   export EMPIRE_TEST_AWS_ENDPOINT=$(scripts/moto.sh 5555)
#   export AWS_ENDPOINT_URL=$EMPIRE_TEST_AWS_ENDPOINT AWS_ACCESS_KEY_ID=test \
#          AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
#
# Idempotent: installs `moto[server]` with the machine's python3 when `moto_server` is
# missing, and starts it only when nothing answers on the port yet. moto keeps its state
# in memory: every test makes its own uniquely named resources. It listens on 127.0.0.1
# only and is for tests on this machine. Progress goes to stderr; stdout is the URL alone.
set -eu

PORT=${1:-5555}
URL="http://127.0.0.1:$PORT"
DIR=/var/tmp/empire-moto-$PORT
PIDFILE=$DIR/moto.pid
LOG=$DIR/moto.log

log() { printf -- '-----> %s\n' "$*" >&2; }

answers() {
    python3 - "$URL" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2)
PY
}

running() {
    [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

if answers; then
    echo "$URL"
    exit 0
fi

if ! command -v moto_server >/dev/null 2>&1; then
    log "Installing moto[server] with pip"
    python3 -m pip install --quiet 'moto[server]' >&2
    # pyenv puts new console scripts behind shims that exist only after a rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash >/dev/null 2>&1 || true
    fi
fi
SERVER=$(command -v moto_server || true)
if [ -z "$SERVER" ]; then
    echo "installing moto[server] gave no moto_server on PATH" >&2
    exit 1
fi

mkdir -p "$DIR"
if ! running; then
    log "Starting moto on $URL (log in $LOG)"
    # setsid: moto outlives this script and the shell that ran it.
    setsid "$SERVER" -H 127.0.0.1 -p "$PORT" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
fi

tries=0
until answers; do
    tries=$((tries + 1))
    if [ "$tries" -ge 150 ] || ! running; then
        echo "moto did not start on $URL; see $LOG" >&2
        exit 1
    fi
    sleep 0.2
done

echo "$URL"

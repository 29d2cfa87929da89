#!/bin/sh
# Starts a throw-away PostgreSQL server for the store tests and prints its URL.
#
#   export EMPIRE_TEST_DATABASE_URL=$(scripts/postgres.sh)
#   cargo test -p empire-core --test postgres_store
#
# Idempotent: installs Debian's postgresql when it is missing, creates the cluster once,
# starts it only when it is not running, and creates the role and database once. The
# server listens on 127.0.0.1 only, with trust authentication (no password, no TLS): it
# is for tests on this machine, never for data you keep. The role `empire_test` may
# create databases; every test makes its own and drops it.
#
# Environment: EMPIRE_TEST_PG_PORT (default 55432), EMPIRE_TEST_PG_DATA (default
# /var/tmp/empire-test-pg). Progress goes to stderr; stdout is the URL alone.
set -eu

PORT=${EMPIRE_TEST_PG_PORT:-55432}
DATA=${EMPIRE_TEST_PG_DATA:-/var/tmp/empire-test-pg}
ROLE=empire_test

log() { printf -- '-----> %s\n' "$*" >&2; }

# as_postgres CMD... runs a command as the postgres system user.
as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%s ' "$@")"
        fi
    else
        sudo -u postgres -- "$@"
    fi
}

# bindir prints the bin directory of the newest PostgreSQL installed, if any.
bindir() {
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && echo "$dir"
    done | sort -V | tail -n 1
}

BIN=$(bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    log "Installing Debian's postgresql"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2
    BIN=$(bindir)
    if [ -z "$BIN" ]; then
        echo "installing postgresql gave no initdb under /usr/lib/postgresql" >&2
        exit 1
    fi
fi

if [ ! -s "$DATA/PG_VERSION" ]; then
    log "Creating a PostgreSQL cluster in $DATA"
    mkdir -p "$DATA"
    chown postgres:postgres "$DATA" 2>/dev/null || true
    chmod 700 "$DATA"
    as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
        --no-locale >/dev/null
    # Loopback only, and settings for a test server: durability off, room for many
    # parallel tests each with its own pool.
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi

ready() {
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres
}

if ! ready; then
    if as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        # Running (perhaps still starting up): wait for it below.
        :
    else
        log "Starting PostgreSQL on 127.0.0.1:$PORT"
        as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
            -o "-p $PORT" start >/dev/null
    fi
    tries=0
    until ready; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "PostgreSQL did not start on port $PORT; see $DATA/server.log" >&2
            exit 1
        fi
        sleep 1
    done
fi

psql_admin() {
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"
}

if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    log "Creating role $ROLE"
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB"
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$ROLE'")" != 1 ]; then
    log "Creating database $ROLE"
    psql_admin -c "CREATE DATABASE $ROLE OWNER $ROLE"
fi

echo "postgres://$ROLE@127.0.0.1:$PORT/$ROLE"

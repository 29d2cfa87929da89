#!/usr/bin/env bash
# API throughput and latency: `GET /apps` and `GET /apps/{app}/releases` of a gateway
# whose store holds 1,000 apps of 20 releases each, on SQLite and on PostgreSQL, under
# `wrk -t2 -c32 -d15s --latency` from a second process on the same machine — the load
# Empire 0.13 was measured with (the anchor below). Also: the answer sizes, the gateway's
# idle RSS with 1,000 apps (after seeding and a warm-up) and where it is (binary, heap,
# malloc arenas, thread stacks: rss_breakdown), its CPU use under load and at
# idle, and `GET /health` under the same load as a floor (what hyper + wrk reach on this
# machine when a handler does nothing).
#
# Usage: bench/api-throughput.sh [sqlite|postgres|both]   (default both)
#
# Per store: a fresh store (SQLite in a temp data dir; PostgreSQL: a database
# bench_api_<random> on the server of scripts/postgres.sh, dropped at the end), an admin
# user `bench` and an API token made with the `empire` CLI, 1,000 x 20 seeded with
# bench/api-seed.sh (direct SQL into the store's schema), then the gateway on free
# loopback ports, a 3 s warm-up of each route, 5 s idle, VmRSS, then 3 runs of 15 s of
# wrk per route (the floor: once, with the first store). Everything started is stopped
# (SIGTERM) or dropped on exit. Takes about 5 minutes for both stores.
#
# Environment: EMPIRE_BIN (default target/release/empire), EMPIRE_BENCH_KEEP=1 keeps the
# temp dir (gateway logs, wrk outputs), API_BENCH_DURATION (default 15s), API_BENCH_RUNS
# (wrk runs per route, default 3: the table shows medians and the req/s range),
# API_BENCH_APPS / API_BENCH_RELEASES (default 1000 / 20), EMPIRE_TEST_PG_PORT (default
# 55432, see scripts/postgres.sh), API_BENCH_IDLE_STARTS=N (idle memory only: per store,
# N gateway starts on the same seeded store, each with the warm-up, 5 s idle and the
# breakdown, then the median; no wrk runs: on a shared machine the idle RSS varies by a
# few MiB from start to start).
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

STORES=${1:-both}
case "$STORES" in
sqlite | postgres) ;;
both) STORES="sqlite postgres" ;;
*) die "usage: $0 [sqlite|postgres|both]" ;;
esac
DURATION=${API_BENCH_DURATION:-15s}
# wrk runs per route; the table shows medians (the machine may be shared: see the range).
RUNS=${API_BENCH_RUNS:-3}
APPS=${API_BENCH_APPS:-1000}
RELEASES=${API_BENCH_RELEASES:-20}
WRK_LOAD=(-t2 -c32 "-d$DURATION" --latency)
BENCH_USER=bench
# App names of 30 characters (the most AppName allows) and an apps domain as a
# deployment would have one, so that GET /apps answers about as much per app as
# Empire's 385 KB did (see docs/benchmarks-api.md for the size we get).
export APP_PREFIX=api-bench-billing-service-
APPS_DOMAIN=${API_BENCH_APPS_DOMAIN:-apps.internal.example.com}
PROBE_APP=$APP_PREFIX$(printf '%04d' $(((APPS + 1) / 2)))

# Empire 0.13 on PostgreSQL under the same load, and the goals (both stores).
ANCHOR_APPS_RPS=137 ANCHOR_APPS_P99=735
ANCHOR_REL_RPS=330 ANCHOR_REL_P99=218
ANCHOR_RSS_MB=32
GOAL_APPS_RPS=1400 GOAL_APPS_P99=75
GOAL_REL_RPS=6600 GOAL_REL_P99=11
GOAL_RSS_MB=32

require_empire
require_tools curl awk ss base64 docker
# Debian's wrk and sqlite3, installed when missing.
install_debian() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "Installing Debian's $*"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}
command -v wrk >/dev/null 2>&1 || install_debian wrk
command -v sqlite3 >/dev/null 2>&1 || install_debian sqlite3
require_tools wrk sqlite3
docker info >/dev/null 2>&1 || die "no Docker engine answers: the gateway's scheduler needs one"

# --- the gateway ----------------------------------------------------------------------

# start_api_gateway DATA_DIR [--database-url URL]: `empire server` on free loopback ports,
# waits (120 s: it restores every app first) for GET /health. Sets GW_PID GW_HTTP_PORT
# GW_LOG GW_START_S.
start_api_gateway() {
    local data=$1 try i t0
    shift
    GW_LOG=$data.log
    for ((try = 1; ; try++)); do
        GW_SSH_PORT=$(free_port)
        GW_HTTP_PORT=$(free_port)
        GW_ROUTER_PORT=$(free_port)
        t0=$(now)
        "$EMPIRE_BIN" "$@" --data-dir "$data" server \
            --ssh-listen "127.0.0.1:$GW_SSH_PORT" \
            --http-listen "127.0.0.1:$GW_HTTP_PORT" \
            --router-listen "127.0.0.1:$GW_ROUTER_PORT" \
            --apps-domain "$APPS_DOMAIN" >>"$GW_LOG" 2>&1 &
        GW_PID=$!
        for ((i = 0; i < 1200; i++)); do
            if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$GW_HTTP_PORT/health" 2>/dev/null; then
                GW_START_S=$(secs_between "$t0" "$(now)")
                return 0
            fi
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.1
        done
        [ "$i" -lt 1200 ] || die "empire server not healthy after 120 s: $(tail -20 "$GW_LOG")"
        wait "$GW_PID" 2>/dev/null || true
        GW_PID=""
        if [ "$try" -lt 3 ] && tail -20 "$GW_LOG" | grep -q "Address already in use"; then
            note "a port was taken meanwhile; again on other ports"
            continue
        fi
        die "empire server exited: $(tail -20 "$GW_LOG")"
    done
}

GW_PID=""
stop_api_gateway() {
    [ -n "$GW_PID" ] || return 0
    stop_pid "$GW_PID" 30
    GW_PID=""
}
on_exit stop_api_gateway

# cpu_ticks PID: utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
# cpu_pct TICKS SECONDS: CPU use in percent of one core.
cpu_pct() { calc1 "$1 * 100 / $CLK_TCK / $2"; }

# rss_breakdown PID: where a process's resident memory is, from /proc/PID/smaps, in MiB:
# the executable's own mappings, other files (shared libraries, the database's -shm),
# the main heap (brk: glibc's main malloc arena), glibc's other malloc arenas (anonymous
# mappings starting on a 64 MiB boundary), thread stacks (anonymous mappings right after
# a guard page), other anonymous memory (large mallocs served by mmap), plus the thread
# count. One line, also used by docs/benchmarks-api.md.
rss_breakdown() {
    local exe threads
    exe=$(readlink "/proc/$1/exe")
    threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$1/status")
    awk -v exe="$exe" -v threads="$threads" '
        function hex(s,   i, c, n) {
            n = 0
            for (i = 1; i <= length(s); i++) {
                c = index("0123456789abcdef", substr(s, i, 1)) - 1
                n = n * 16 + c
            }
            return n
        }
        $1 ~ /^[0-9a-f]+-[0-9a-f]+$/ {
            split($1, r, "-")
            start = hex(r[1]); end = hex(r[2]); perms = $2; path = $6
            if (path == exe) kind = "binary"
            else if (path == "[heap]") kind = "heap"
            else if (path == "[stack]") kind = "stacks"
            else if (path ~ /^\//) kind = "files"
            else if (path != "") kind = "other"
            else if (perms ~ /^rw/ && start % 67108864 == 0) kind = "arenas"
            else if (perms ~ /^rw/ && prev_guard && prev_end == start) kind = "stacks"
            else kind = "anon"
            prev_guard = (path == "" && perms ~ /^---/ && end - start <= 65536)
            prev_end = end
            if (kind == "arenas") n_arenas++
            if (kind == "stacks") n_stacks++
            next
        }
        $1 == "Rss:" { kb[kind] += $2; total += $2 }
        END {
            printf "RSS %.1f MiB: binary %.1f, other files %.1f, main heap %.1f, %d malloc arenas %.1f, %d thread stacks %.1f, other anon %.1f, misc %.1f; %d threads\n",
                total / 1024, kb["binary"] / 1024, kb["files"] / 1024, kb["heap"] / 1024,
                n_arenas, kb["arenas"] / 1024, n_stacks, kb["stacks"] / 1024,
                kb["anon"] / 1024, kb["other"] / 1024, threads
        }' "/proc/$1/smaps"
}

# --- wrk ------------------------------------------------------------------------------

# to_ms VALUE: wrk's 812.00us / 1.23ms / 2.01s / 1.00m in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

# run_wrk NAME PATH: wrk against the gateway with the token; sets RPS P50 P99 ERRORS
# REQUESTS CPU_PCT (the gateway's), keeps the output in $BENCH_TMP/wrk-NAME.txt.
run_wrk() {
    local name=$1 path=$2 out=$BENCH_TMP/wrk-$1.txt t0 c0 t1 c1
    t0=$(now)
    c0=$(cpu_ticks "$GW_PID")
    wrk "${WRK_LOAD[@]}" -H "Authorization: Basic $AUTH" \
        "http://127.0.0.1:$GW_HTTP_PORT$path" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    c1=$(cpu_ticks "$GW_PID")
    t1=$(now)
    CPU_PCT=$(cpu_pct $((c1 - c0)) "$(secs_between "$t0" "$t1")")
    RPS=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$out")
    P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    REQUESTS=$(awk '/requests in/ { print $1 }' "$out")
    ERRORS=$(awk '/Non-2xx or 3xx responses:/ { n += $NF }
                  /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
                  END { print n + 0 }' "$out")
    { [ -n "$RPS" ] && [ -n "$REQUESTS" ]; } || die "no result from wrk: $(cat "$out")"
    note "$name: $RPS req/s, p50 $P50 ms, p99 $P99 ms, $REQUESTS requests, $ERRORS errors, gateway CPU $CPU_PCT %"
    if [ "$ERRORS" != 0 ]; then
        note "wrk saw $ERRORS errors or non-2xx answers on $path: $(grep -E 'Non-2xx|Socket' "$out" | tr '\n' ' ')"
    fi
}

# measure NAME PATH: RUNS runs of run_wrk; sets RPS P50 P99 CPU_PCT to the medians over
# the runs, RPS_RANGE to "min-max" req/s, ERRORS to the sum.
measure() {
    local name=$1 path=$2 r rps=() p50=() p99=() cpu=() errors=0
    for ((r = 1; r <= RUNS; r++)); do
        run_wrk "$name-$r" "$path"
        rps+=("$RPS") p50+=("$P50") p99+=("$P99") cpu+=("$CPU_PCT")
        errors=$((errors + ERRORS))
    done
    RPS=$(printf '%.0f' "$(median "${rps[@]}")")
    P50=$(printf '%.2f' "$(median "${p50[@]}")")
    P99=$(printf '%.2f' "$(median "${p99[@]}")")
    CPU_PCT=$(calc1 "$(median "${cpu[@]}")")
    RPS_RANGE=$(printf '%s\n' "${rps[@]}" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }')
    ERRORS=$errors
}

# warm PATH: 3 s of the same load, results ignored.
warm() {
    wrk -t2 -c32 -d3s -H "Authorization: Basic $AUTH" "http://127.0.0.1:$GW_HTTP_PORT$1" >/dev/null 2>&1 ||
        die "the warm-up of $1 failed"
}

# get PATH OUT: one authenticated GET; prints the status, the body goes to OUT.
get() {
    curl -sS -o "$2" -w '%{http_code}' -H "Authorization: Basic $AUTH" \
        "http://127.0.0.1:$GW_HTTP_PORT$1"
}

# --- PostgreSQL -----------------------------------------------------------------------

PG_ADMIN_URL=""
PG_DB=""
pg_drop() {
    [ -n "$PG_DB" ] || return 0
    stop_api_gateway
    psql -X -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
        note "could not drop database $PG_DB"
    PG_DB=""
}

# --- one store ------------------------------------------------------------------------

ROWS=()
RSS_ROWS=()
BREAKDOWNS=()
FLOOR_DONE=0
MISSES=()

# cpu_ms_per_req: the gateway's CPU time per request of the last wrk run, in ms.
cpu_ms_per_req() { calc "$CPU_PCT * 10 / $RPS"; }
# ratio A B: A / B, 1 decimal, with an x.
ratio() { printf '%sx' "$(calc1 "$1 / $2")"; }
# check NAME VALUE OP LIMIT: sets VERDICT to met or missed and records a missed goal.
check() {
    if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !(op == ">=" ? v >= l : v <= l) }'; then
        VERDICT=met
    else
        VERDICT=missed
        MISSES+=("$1: $2, goal $3 $4")
    fi
}

# idle_starts STORE DATA_DIR [--database-url URL]: API_BENCH_IDLE_STARTS starts of the
# running gateway's store, each: warm-up of both routes, 5 s idle, VmRSS and breakdown.
idle_starts() {
    local store=$1 data=$2 i rss=() line
    shift 2
    for ((i = 1; i <= API_BENCH_IDLE_STARTS; i++)); do
        [ "$i" = 1 ] || start_api_gateway "$data" "$@"
        warm /apps
        warm "/apps/$PROBE_APP/releases"
        sleep 5
        line=$(rss_breakdown "$GW_PID")
        cp "/proc/$GW_PID/smaps" "$BENCH_TMP/$store-idle-smaps-$i.txt"
        rss+=("$(calc1 "$(gw_status_kb VmRSS) / 1024")")
        note "$store start $i: $line"
        BREAKDOWNS+=("$store start $i: $line")
        stop_api_gateway
    done
    RSS_ROWS+=("$store|$(printf '%s\n' "${rss[@]}" | sort -n | tr '\n' ' ')|$(calc1 "$(median "${rss[@]}")")")
}

bench_store() {
    local store=$1 data=$BENCH_TMP/$1 db_args=() status body_apps body_rel n t0 c0 idle_cpu
    log "$store: a store with $APPS apps x $RELEASES releases"
    mkdir -p "$data"
    if [ "$store" = postgres ]; then
        require_tools psql
        PG_ADMIN_URL=$("$REPO_ROOT/scripts/postgres.sh")
        PG_DB=bench_api_$RUN_SUFFIX
        on_exit pg_drop
        psql -X -q -v ON_ERROR_STOP=1 "$PG_ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
        db_args=(--database-url "${PG_ADMIN_URL%/*}/$PG_DB")
    fi
    "$EMPIRE_BIN" "${db_args[@]}" --data-dir "$data" users add "$BENCH_USER" --admin >/dev/null
    TOKEN=$("$EMPIRE_BIN" "${db_args[@]}" --data-dir "$data" tokens create "$BENCH_USER" 2>/dev/null)
    [ -n "$TOKEN" ] || die "empire tokens create printed no token"
    AUTH=$(printf '%s:%s' "$BENCH_USER" "$TOKEN" | base64 -w0)
    if [ "$store" = postgres ]; then
        "$BENCH_DIR/api-seed.sh" postgres "${db_args[1]}" "$BENCH_USER" "$APPS" "$RELEASES"
    else
        "$BENCH_DIR/api-seed.sh" sqlite "$data/empire.db" "$BENCH_USER" "$APPS" "$RELEASES"
    fi

    start_api_gateway "$data" "${db_args[@]}"
    note "gateway pid $GW_PID on http :$GW_HTTP_PORT, healthy $GW_START_S s after start (it restores $APPS apps first)"

    # What the routes answer, checked before they are measured.
    body_apps=$BENCH_TMP/$store-apps.json
    body_rel=$BENCH_TMP/$store-releases.json
    status=$(get /apps "$body_apps")
    [ "$status" = 200 ] || die "GET /apps answered $status: $(head -c 300 "$body_apps")"
    n=$(grep -o '"git_url":' "$body_apps" | wc -l)
    [ "$n" = "$APPS" ] || die "GET /apps listed $n apps, not $APPS"
    status=$(get "/apps/$PROBE_APP/releases" "$body_rel")
    [ "$status" = 200 ] || die "GET /apps/$PROBE_APP/releases answered $status: $(head -c 300 "$body_rel")"
    n=$(grep -o '"status":"succeeded"' "$body_rel" | wc -l)
    [ "$n" = "$RELEASES" ] || die "GET /apps/$PROBE_APP/releases listed $n succeeded releases, not $RELEASES"
    APPS_BYTES=$(wc -c <"$body_apps")
    REL_BYTES=$(wc -c <"$body_rel")
    note "GET /apps: $APPS_BYTES bytes ($APPS apps); GET /apps/$PROBE_APP/releases: $REL_BYTES bytes"

    if [ -n "${API_BENCH_IDLE_STARTS:-}" ]; then
        idle_starts "$store" "$data" "${db_args[@]}"
        pg_drop
        return 0
    fi
    warm /apps
    warm "/apps/$PROBE_APP/releases"
    # Idle: 5 s after the warm-up (the route keeper polls every app every 2 s meanwhile).
    c0=$(cpu_ticks "$GW_PID")
    t0=$(now)
    sleep 5
    idle_cpu=$(cpu_pct $(($(cpu_ticks "$GW_PID") - c0)) "$(secs_between "$t0" "$(now)")")
    RSS_KB=$(gw_status_kb VmRSS)
    note "idle: VmRSS $((RSS_KB / 1024)) MiB, gateway CPU $idle_cpu % of a core"
    BREAKDOWN=$(rss_breakdown "$GW_PID")
    cp "/proc/$GW_PID/smaps" "$BENCH_TMP/$store-idle-smaps.txt"
    note "idle $BREAKDOWN"
    BREAKDOWNS+=("$store: $BREAKDOWN")

    if [ "$FLOOR_DONE" = 0 ]; then
        measure "$store-health" /health
        ROWS+=("floor: GET /health|$store|$RPS|$RPS_RANGE|$P50|$P99|3|$CPU_PCT|$(cpu_ms_per_req)|-|-|-")
        FLOOR_DONE=1
    fi
    local v1 rss_mb hwm_mb
    measure "$store-apps" /apps
    check "$store GET /apps req/s" "$RPS" ">=" $GOAL_APPS_RPS
    v1=$VERDICT
    check "$store GET /apps p99 ms" "$P99" "<=" $GOAL_APPS_P99
    ROWS+=("GET /apps|$store|$RPS|$RPS_RANGE|$P50|$P99|$APPS_BYTES|$CPU_PCT|$(cpu_ms_per_req)|$(ratio "$RPS" $ANCHOR_APPS_RPS)|$(ratio $ANCHOR_APPS_P99 "$P99")|$v1 / $VERDICT")
    [ "$ERRORS" = 0 ] || MISSES+=("$store GET /apps: $ERRORS errors")
    measure "$store-releases" "/apps/$PROBE_APP/releases"
    check "$store GET /apps/{app}/releases req/s" "$RPS" ">=" $GOAL_REL_RPS
    v1=$VERDICT
    check "$store GET /apps/{app}/releases p99 ms" "$P99" "<=" $GOAL_REL_P99
    ROWS+=("GET /apps/{app}/releases|$store|$RPS|$RPS_RANGE|$P50|$P99|$REL_BYTES|$CPU_PCT|$(cpu_ms_per_req)|$(ratio "$RPS" $ANCHOR_REL_RPS)|$(ratio $ANCHOR_REL_P99 "$P99")|$v1 / $VERDICT")
    [ "$ERRORS" = 0 ] || MISSES+=("$store GET /apps/{app}/releases: $ERRORS errors")
    rss_mb=$(calc1 "$RSS_KB / 1024")
    hwm_mb=$(calc1 "$(gw_status_kb VmHWM) / 1024")
    check "$store idle VmRSS MiB" "$rss_mb" "<=" $GOAL_RSS_MB
    RSS_ROWS+=("$store|$rss_mb|$hwm_mb|$idle_cpu|$GW_START_S|$(ratio "$rss_mb" $ANCHOR_RSS_MB)|$VERDICT")

    stop_api_gateway
    pg_drop
}

for store in $STORES; do
    bench_store "$store"
done

if [ -n "${API_BENCH_IDLE_STARTS:-}" ]; then
    echo
    echo "idle RSS after the warm-up, $API_BENCH_IDLE_STARTS starts per store ($APPS apps x $RELEASES releases)"
    table "store|idle VmRSS MiB, sorted|median" "${RSS_ROWS[@]}"
    echo
    echo "idle memory (MiB, from /proc/PID/smaps):"
    printf '  %s\n' "${BREAKDOWNS[@]}"
    machine_summary
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ), $EMPIRE_BIN"
    exit 0
fi

echo
echo "API throughput: wrk ${WRK_LOAD[*]} from the same machine, $APPS apps x $RELEASES releases, releases of $PROBE_APP; medians of $RUNS runs"
table "route|store|req/s|req/s range|p50 ms|p99 ms|answer bytes|gateway CPU %|CPU ms/req|req/s vs 0.13|p99 vs 0.13|goal (req/s / p99)" "${ROWS[@]}"
echo
table "store|idle VmRSS MiB|VmHWM after load MiB|idle CPU % (1 core)|start to healthy s|RSS vs 0.13|goal <= $GOAL_RSS_MB MiB" "${RSS_ROWS[@]}"
echo
echo "idle memory (MiB, from /proc/PID/smaps):"
printf '  %s\n' "${BREAKDOWNS[@]}"
echo
echo "anchor (Empire 0.13, PostgreSQL): GET /apps $ANCHOR_APPS_RPS req/s p99 $ANCHOR_APPS_P99 ms (385 KB), GET /apps/{app}/releases $ANCHOR_REL_RPS req/s p99 $ANCHOR_REL_P99 ms, idle RSS $ANCHOR_RSS_MB MB"
echo "goals (each store): GET /apps >= $GOAL_APPS_RPS req/s p99 <= $GOAL_APPS_P99 ms, releases >= $GOAL_REL_RPS req/s p99 <= $GOAL_REL_P99 ms, idle RSS <= $GOAL_RSS_MB MB"
echo "vs 0.13: req/s ours / anchor; p99 anchor / ours (higher is better for both)"
machine_summary
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), empire $("$EMPIRE_BIN" --version | awk '{ print $2 }') ($(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
if [ ${#MISSES[@]} -gt 0 ]; then
    echo "missed goals:"
    printf '  - %s\n' "${MISSES[@]}"
else
    echo "every goal met"
fi

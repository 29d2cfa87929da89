# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are used by the scripts that source this file)
# Shared set-up for the push-path benchmarks, sourced by bench/*.sh (bash).
#
# - a temp dir ($BENCH_TMP) and a cleanup trap that undoes everything registered with
#   `on_exit` (in reverse order), also on Ctrl-C;
# - `start_gateway`: `empire server` on free loopback ports with a temp data dir, a
#   fresh SSH key added for user `bench`, GIT_SSH_COMMAND set up for it; the trap stops
#   the gateway (SIGTERM, then SIGKILL) and removes its containers (label
#   empire.gateway=<id>) and the images of the apps the benchmark pushed;
# - timing (`$EPOCHREALTIME`, no fork), median, polling a URL every 50 ms, a table.
#
# Environment: EMPIRE_BIN (default target/release/empire), EMPIRE_BENCH_CACHE (default
# bench/.cache), EMPIRE_BENCH_KEEP=1 keeps $BENCH_TMP for inspection.

set -eu

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$BENCH_DIR")
CACHE_DIR=${EMPIRE_BENCH_CACHE:-$BENCH_DIR/.cache}
EMPIRE_BIN=${EMPIRE_BIN:-$REPO_ROOT/target/release/empire}
BASE_IMAGE=empire/busybox:latest
# A push that has not finished after this many seconds fails the benchmark (exit 124).
PUSH_TIMEOUT=${EMPIRE_BENCH_PUSH_TIMEOUT:-600}
# The app port every process listens on ($PORT), core::scheduler::DEFAULT_PORT.
APP_PORT=5000

log() { printf -- '-----> %s\n' "$*" >&2; }
note() { printf -- '       %s\n' "$*" >&2; }
die() {
    printf -- ' !     %s\n' "$*" >&2
    exit 1
}

# A lowercase hex suffix that makes names unique (app names are DNS labels).
rand_hex() { od -An -N"${1:-3}" -tx1 /dev/urandom | tr -d ' \n'; }
RUN_SUFFIX=$(rand_hex 3)

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/empire-bench.XXXXXX")

# --- cleanup ------------------------------------------------------------------------

_CLEANUP=()
# on_exit CMD...: run CMD (one shell string) when the script exits, last registered first.
on_exit() { _CLEANUP+=("$*"); }

_run_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${_CLEANUP[$i]}" || true
    done
    if [ "${EMPIRE_BENCH_KEEP:-0}" = 1 ]; then
        note "kept $BENCH_TMP"
    else
        rm -rf "$BENCH_TMP"
    fi
    exit "$rc"
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (10), then SIGKILL.
stop_pid() {
    local pid=$1 limit=${2:-10} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "pid $pid ignored SIGTERM for ${limit}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# --- time and numbers ---------------------------------------------------------------

# now: seconds since the epoch with microseconds (bash 5, no fork).
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
# secs_between START END: END - START, 3 decimals.
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# median N...: the median (mean of the middle two for an even count), 3 decimals.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit 1
              if (NR % 2) printf "%.3f", v[(NR + 1) / 2]
              else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# calc EXPR: awk arithmetic, 3 decimals (e.g. calc "$a / $b").
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# calc1 EXPR: the same, 1 decimal.
calc1() { awk "BEGIN { printf \"%.1f\", $1 }"; }

# --- ports --------------------------------------------------------------------------

_USED_PORTS=" "
# free_port: a loopback TCP port no socket uses (listening or connected), below the
# kernel's ephemeral range so that outgoing connections do not take it meanwhile, and
# not handed out before by this script.
free_port() {
    local p low
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    while :; do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
        case "$_USED_PORTS" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then
            _USED_PORTS="$_USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
}

# --- prerequisites ------------------------------------------------------------------

require_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
    done
}

# require_empire: the release binary must exist (build it first, on purpose: the build
# competes with everything else on a small machine).
require_empire() {
    [ -x "$EMPIRE_BIN" ] || die "$EMPIRE_BIN does not exist: run \`cargo build --release -p empire\` first"
}

require_docker() {
    docker info >/dev/null 2>&1 || die "no Docker engine answers (see scripts/lib.sh ensure_docker)"
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || "$REPO_ROOT/scripts/base-images.sh" >&2
}

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
# machine_summary: the machine, and its 1-minute load average at the start and the end of
# the script (other work on the machine slows the gateway and the floor alike).
machine_summary() {
    printf 'machine: %s cores (nproc), %s GiB RAM (free -g), %s, git %s, docker engine %s; load average %s at the start, %s at the end\n' \
        "$(nproc)" "$(free -g | awk '/^Mem:/ { print $2 }')" "$(uname -sr)" \
        "$(git --version | awk '{ print $3 }')" \
        "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')" \
        "$LOAD_START" "$(cut -d' ' -f1 /proc/loadavg)"
}

# --- SSH key and git ----------------------------------------------------------------

BENCH_KEY=$BENCH_TMP/id_ed25519
ssh-keygen -q -t ed25519 -N '' -C "empire-bench" -f "$BENCH_KEY"
# The same OpenSSH client options for every server the benchmarks push to.
SSH_OPTS="-i $BENCH_KEY -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ControlMaster=no -o ControlPath=none"
export GIT_SSH_COMMAND="ssh $SSH_OPTS"
export GIT_AUTHOR_NAME="Empire Bench" GIT_AUTHOR_EMAIL="bench@empire.invalid"
export GIT_COMMITTER_NAME="Empire Bench" GIT_COMMITTER_EMAIL="bench@empire.invalid"

# --- the gateway --------------------------------------------------------------------

GW_PID=""
GW_ID=""
GW_DATA=""
GW_APPS=()

# start_gateway: starts `empire server` and waits for GET /health (60 s); new ports and
# another try when a port was taken between the check and the bind.
# Sets GW_PID GW_DATA GW_ID GW_SSH_PORT GW_HTTP_PORT GW_ROUTER_PORT GW_LOG.
start_gateway() {
    require_empire
    GW_DATA=$BENCH_TMP/gateway
    GW_LOG=$BENCH_TMP/gateway.log
    mkdir -p "$GW_DATA"
    "$EMPIRE_BIN" --data-dir "$GW_DATA" keys add bench "$BENCH_KEY.pub" >>"$GW_LOG" 2>&1 ||
        die "empire keys add failed: $(tail -5 "$GW_LOG")"
    on_exit stop_gateway
    local i try
    for ((try = 1; ; try++)); do
        GW_SSH_PORT=$(free_port)
        GW_HTTP_PORT=$(free_port)
        GW_ROUTER_PORT=$(free_port)
        "$EMPIRE_BIN" --data-dir "$GW_DATA" server \
            --ssh-listen "127.0.0.1:$GW_SSH_PORT" \
            --http-listen "127.0.0.1:$GW_HTTP_PORT" \
            --router-listen "127.0.0.1:$GW_ROUTER_PORT" >>"$GW_LOG" 2>&1 &
        GW_PID=$!
        for ((i = 0; i < 600; i++)); do
            if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$GW_HTTP_PORT/health" 2>/dev/null; then
                break 2
            fi
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.1
        done
        [ "$i" -lt 600 ] || die "empire server not healthy after 60 s: $(tail -20 "$GW_LOG")"
        wait "$GW_PID" 2>/dev/null || true
        GW_PID=""
        if [ "$try" -lt 3 ] && tail -20 "$GW_LOG" | grep -q "Address already in use"; then
            note "a port was taken meanwhile; again on other ports"
            continue
        fi
        die "empire server exited: $(tail -20 "$GW_LOG")"
    done
    [ -s "$GW_DATA/gateway-id" ] || die "$GW_DATA/gateway-id missing"
    GW_ID=$(cat "$GW_DATA/gateway-id")
    log "gateway pid $GW_PID id $GW_ID: ssh :$GW_SSH_PORT http :$GW_HTTP_PORT router :$GW_ROUTER_PORT"
}

# stop_gateway: SIGTERM (30 s to drain), then removes its containers and app images.
stop_gateway() {
    [ -n "$GW_PID" ] || return 0
    stop_pid "$GW_PID" 30
    GW_PID=""
    if [ -n "$GW_ID" ]; then
        local ids
        ids=$(docker ps -aq --filter "label=empire.gateway=$GW_ID")
        # shellcheck disable=SC2086
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    fi
    local app imgs
    for app in "${GW_APPS[@]}"; do
        imgs=$(docker image ls --format '{{.Repository}}:{{.Tag}}' "empire/$app")
        # shellcheck disable=SC2086
        [ -z "$imgs" ] || docker rmi -f $imgs >/dev/null 2>&1 || true
    done
}

# track_app APP: its images are removed when the script exits.
track_app() { GW_APPS+=("$1"); }

# gw_url APP: where `git push` sends an app.
gw_url() { echo "ssh://git@127.0.0.1:$GW_SSH_PORT/$1.git"; }

# gw_rss_kb [FIELD]: VmRSS (or VmHWM) of the gateway process, in kB.
gw_status_kb() { awk -v f="${1:-VmRSS}:" '$1 == f { print $2 }' "/proc/$GW_PID/status"; }

# --- the small app ------------------------------------------------------------------

# small_app_dockerfile DIR: the small app's Dockerfile.
small_app_dockerfile() {
    cat >"$1/Dockerfile" <<'DOCKERFILE'
FROM empire/busybox:latest
COPY index.html /www/index.html
EXPOSE 5000
CMD ["/bin/sh", "-c", "exec httpd -f -p ${PORT:-5000} -h /www"]
DOCKERFILE
}

# make_small_app DIR MARKER: a git repo (branch main) with a Dockerfile app: busybox
# httpd serving index.html, which holds MARKER.
make_small_app() {
    local dir=$1 marker=$2
    mkdir -p "$dir"
    git -C "$dir" init -q -b main
    small_app_dockerfile "$dir"
    echo "$marker" >"$dir/index.html"
    git -C "$dir" add -A
    git -C "$dir" commit -q -m "small app: $marker"
}

# change_small_app DIR MARKER: a one-file change (index.html), committed.
change_small_app() {
    echo "$2" >"$1/index.html"
    git -C "$1" commit -q -am "change: $2"
}

# wait_for_body URL HOST MARKER TIMEOUT_S [END_FILE]: polls every 50 ms until a 200
# whose body is MARKER; prints the time ($EPOCHREALTIME) it answered. Fails after
# TIMEOUT_S, or (status 2) as soon as END_FILE holds "<time> <non-zero exit code>" (the
# push it waits for failed). Only curl forks, so polling costs the machine little while
# a build runs beside it.
wait_for_body() {
    local url=$1 host=$2 marker=$3 limit_us=$(($4 * 1000000)) end_file=${5:-} start_us body t
    start_us=${EPOCHREALTIME/[.,]/}
    while :; do
        if [ -n "$end_file" ] && [ -s "$end_file" ] && [ "$(awk '{ print $2 }' "$end_file")" != 0 ]; then
            return 2
        fi
        body=$(curl -fs --max-time 1 -H "Host: $host" "$url" 2>/dev/null) || body=""
        t=${EPOCHREALTIME/,/.}
        if [ "$body" = "$marker" ]; then
            echo "$t"
            return 0
        fi
        [ $((${EPOCHREALTIME/[.,]/} - start_us)) -lt "$limit_us" ] || return 1
        sleep 0.05
    done
}

# --- output -------------------------------------------------------------------------

# table HEADER ROW...: rows are '|'-separated cells; prints an aligned Markdown table.
table() {
    printf '%s\n' "$@" | awk -F'|' '
        { for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
          if (NF > n) n = NF }
        END { for (r = 1; r <= NR; r++) {
                line = "|"
                for (i = 1; i <= n; i++) line = line sprintf(" %-" w[i] "s |", c[r, i])
                print line
                if (r == 1) { line = "|"; for (i = 1; i <= n; i++) { d = ""; for (k = 0; k < w[i]; k++) d = d "-"; line = line " " d " |" } print line }
              } }'
}

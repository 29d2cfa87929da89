#!/usr/bin/env bash
# Concurrent pushes: N apps (default 10; N separate repos of the small Dockerfile app,
# each with its own index.html) pushed one after another, then N other new apps pushed
# all at once. Every push must succeed and every app must answer with its own content
# through the router. Reports both wall times and the ratio concurrent / sequential.
#
# Usage: bench/concurrent-pushes.sh [N]
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

N=${1:-10}
require_tools git ssh curl awk ss docker timeout
require_empire
require_docker

start_gateway

# prepare KIND: N repos for apps cp-<suffix>-<kind><i>.
prepare() {
    local i app
    for ((i = 1; i <= N; i++)); do
        app=cp-$RUN_SUFFIX-$1$i
        track_app "$app"
        make_small_app "$BENCH_TMP/$app" "served by $app"
    done
}

# push_one APP: pushes, records "<seconds> <exit code>" in $BENCH_TMP/APP.result.
push_one() {
    local app=$1 t0 rc=0
    t0=$(now)
    timeout "$PUSH_TIMEOUT" git -C "$BENCH_TMP/$app" push "$(gw_url "$app")" main >"$BENCH_TMP/$app.log" 2>&1 || rc=$?
    echo "$(secs_between "$t0" "$(now)") $rc" >"$BENCH_TMP/$app.result"
}

# check KIND: every push of KIND succeeded and every app serves its own content.
check() {
    local i app rc failed=0
    for ((i = 1; i <= N; i++)); do
        app=cp-$RUN_SUFFIX-$1$i
        read -r _ rc <"$BENCH_TMP/$app.result"
        if [ "$rc" -ne 0 ]; then
            printf ' !     %s: push failed (exit %s):\n' "$app" "$rc" >&2
            tail -8 "$BENCH_TMP/$app.log" | sed 's/^/       /' >&2
            failed=1
        elif ! wait_for_body "http://127.0.0.1:$GW_ROUTER_PORT/" "$app.localhost" "served by $app" 10 >/dev/null; then
            printf ' !     %s: pushed, but does not answer with its content\n' "$app" >&2
            failed=1
        fi
    done
    [ "$failed" -eq 0 ] || die "$1: not every push succeeded (see above)"
}

# per_push KIND: "min/median/max" of the single pushes' durations.
per_push() {
    local i t=()
    for ((i = 1; i <= N; i++)); do
        t+=("$(awk '{ print $1 }' "$BENCH_TMP/cp-$RUN_SUFFIX-$1$i.result")")
    done
    printf '%s / %s / %s' "$(printf '%s\n' "${t[@]}" | sort -g | head -1)" "$(median "${t[@]}")" \
        "$(printf '%s\n' "${t[@]}" | sort -g | tail -1)"
}

prepare s
prepare c

log "$N pushes, one after another"
T0=$(now)
for ((i = 1; i <= N; i++)); do
    push_one "cp-$RUN_SUFFIX-s$i"
done
T1=$(now)
SEQ=$(secs_between "$T0" "$T1")
check s
note "sequential: $SEQ s"

log "$N pushes at once"
PIDS=()
T0=$(now)
for ((i = 1; i <= N; i++)); do
    push_one "cp-$RUN_SUFFIX-c$i" &
    PIDS+=("$!")
done
for pid in "${PIDS[@]}"; do wait "$pid"; done
T1=$(now)
CON=$(secs_between "$T0" "$T1")
check c
note "concurrent: $CON s"

echo
echo "concurrent pushes, $(date -u +%Y-%m-%dT%H:%MZ); $(machine_summary)"
echo "$N new apps each way (small Dockerfile app, first push); all pushes succeeded and every app answers with its own content"
echo
table "mode|wall time (s)|single push min / median / max (s)|ratio to sequential" \
    "sequential|$SEQ|$(per_push s)|1.000" \
    "concurrent|$CON|$(per_push c)|$(calc "$CON / $SEQ")"

#!/usr/bin/env bash
# Push to ready: a small Dockerfile app (FROM empire/busybox, busybox httpd serving
# index.html). Times, from the start of `git push`, until the new content answers
# through the router (curl every 50 ms, running while the push runs): once for the
# first push of a new app, once for a one-file change. The floor, in the same run and
# interleaved: `docker build` of the same context + `docker run` (port published) +
# first 200 with the new content (curl every 50 ms), for a fresh image and for the same
# one-file change. Every build has a unique index.html, so neither side hits a cache
# entry the other made. Repeats REPS times (default 5) and reports medians.
#
# Usage: bench/push-to-ready.sh [REPS]
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

REPS=${1:-5}
require_tools git ssh curl awk ss docker timeout
require_empire
require_docker
export DOCKER_BUILDKIT=0 # the classic builder, as the gateway's /build API call

FLOOR_LABEL=empire.bench=$RUN_SUFFIX
FLOOR_REPO=empire-bench-floor-$RUN_SUFFIX
cleanup_floor() {
    local ids
    ids=$(docker ps -aq --filter "label=$FLOOR_LABEL")
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker image ls -q "$FLOOR_REPO" | sort -u)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker rmi -f $ids >/dev/null 2>&1 || true
}
on_exit cleanup_floor

start_gateway

# gateway_push NAME APP DIR MARKER: prints "<ready s> <push returned s>".
gateway_push() {
    local name=$1 app=$2 dir=$3 marker=$4 t0 ready end rc out=$BENCH_TMP/$1.log
    rm -f "$out.end"
    t0=$(now)
    (
        rc=0
        timeout "$PUSH_TIMEOUT" git -C "$dir" push "$(gw_url "$app")" main >"$out" 2>&1 || rc=$?
        echo "$(now) $rc" >"$out.end"
    ) &
    local pid=$!
    if ! ready=$(wait_for_body "http://127.0.0.1:$GW_ROUTER_PORT/" "$app.localhost" "$marker" "$PUSH_TIMEOUT" "$out.end"); then
        wait "$pid" || true
        die "$name: $app never answered with its new content; the push said: $(tail -15 "$out")"
    fi
    wait "$pid" || true
    read -r end rc <"$out.end"
    [ "$rc" -eq 0 ] || die "$name: the push failed (exit $rc) although the app answered: $(tail -15 "$out")"
    echo "$(secs_between "$t0" "$ready") $(secs_between "$t0" "$end")"
}

# floor NAME CONTEXT TAG MARKER: docker build + docker run + first 200; prints seconds.
floor() {
    local name=$1 ctx=$2 tag=$3 marker=$4 port t0 ready
    port=$(free_port)
    t0=$(now)
    docker build -q -t "$tag" "$ctx" >"$BENCH_TMP/$name.build.log" 2>&1 ||
        die "$name: docker build failed: $(tail -5 "$BENCH_TMP/$name.build.log")"
    docker run -d --label "$FLOOR_LABEL" -e "PORT=$APP_PORT" -p "127.0.0.1:$port:$APP_PORT" "$tag" >/dev/null
    ready=$(wait_for_body "http://127.0.0.1:$port/" "127.0.0.1" "$marker" 60) ||
        die "$name: the floor container never answered"
    secs_between "$t0" "$ready"
}

G_FIRST=() G_FIRST_RET=() G_CHANGE=() G_CHANGE_RET=() F_FIRST=() F_CHANGE=()
G_BUILD=() G_DEPLOY=()
# said LOG WHAT: the seconds the gateway reported in its remote: lines for the build
# ("Built … in 0.6s") or the rollout ("Deployed vN in 0.8s"); nothing if absent.
said() {
    case $2 in
    build) sed -n 's/.*Built .* in \([0-9.]*\)s.*/\1/p' "$1" | tail -1 ;;
    deploy) sed -n 's/.*Deployed v[0-9]* in \([0-9.]*\)s.*/\1/p' "$1" | tail -1 ;;
    esac
}
run_gateway() {
    local i=$1 app=ptr-$RUN_SUFFIX-$1 dir=$BENCH_TMP/app-$1 r
    track_app "$app"
    make_small_app "$dir" "first push of $app"
    r=$(gateway_push "gw-first-$i" "$app" "$dir" "first push of $app")
    G_FIRST+=("${r% *}") G_FIRST_RET+=("${r#* }")
    change_small_app "$dir" "one-file change of $app"
    r=$(gateway_push "gw-change-$i" "$app" "$dir" "one-file change of $app")
    G_CHANGE+=("${r% *}") G_CHANGE_RET+=("${r#* }")
    r=$(said "$BENCH_TMP/gw-change-$i.log" build)
    [ -z "$r" ] || G_BUILD+=("$r")
    r=$(said "$BENCH_TMP/gw-change-$i.log" deploy)
    [ -z "$r" ] || G_DEPLOY+=("$r")
    note "gateway: first ${G_FIRST[-1]} s (push returned ${G_FIRST_RET[-1]} s), change ${G_CHANGE[-1]} s (push returned ${G_CHANGE_RET[-1]} s)"
}
run_floor() {
    local i=$1 ctx=$BENCH_TMP/floor-$1 marker
    mkdir -p "$ctx"
    small_app_dockerfile "$ctx"
    marker="floor first $RUN_SUFFIX $i"
    echo "$marker" >"$ctx/index.html"
    F_FIRST+=("$(floor "floor-first-$i" "$ctx" "$FLOOR_REPO:$i-first" "$marker")")
    marker="floor change $RUN_SUFFIX $i"
    echo "$marker" >"$ctx/index.html"
    F_CHANGE+=("$(floor "floor-change-$i" "$ctx" "$FLOOR_REPO:$i-change" "$marker")")
    note "floor:   first ${F_FIRST[-1]} s, change ${F_CHANGE[-1]} s"
}

for ((i = 1; i <= REPS; i++)); do
    log "repetition $i/$REPS"
    # alternate which side goes first, so drift on a busy machine hits both alike
    if ((i % 2)); then
        run_gateway "$i"
        run_floor "$i"
    else
        run_floor "$i"
        run_gateway "$i"
    fi
    cleanup_floor
done

GF=$(median "${G_FIRST[@]}") GFR=$(median "${G_FIRST_RET[@]}")
GC=$(median "${G_CHANGE[@]}") GCR=$(median "${G_CHANGE_RET[@]}")
FF=$(median "${F_FIRST[@]}") FC=$(median "${F_CHANGE[@]}")

echo
echo "push to ready, $(date -u +%Y-%m-%dT%H:%MZ); $(machine_summary)"
echo "$REPS repetitions, medians in seconds; 'ready' = the new content answers (curl every 50 ms)"
echo
table "push|gateway: ready|gateway: push returned|floor: build+run+200|ready - floor|runs gateway (ready)|runs floor" \
    "first push|$GF|$GFR|$FF|$(calc "$GF - $FF")|${G_FIRST[*]}|${F_FIRST[*]}" \
    "one-file change|$GC|$GCR|$FC|$(calc "$GC - $FC")|${G_CHANGE[*]}|${F_CHANGE[*]}"
if [ "${#G_BUILD[@]}" -gt 0 ] && [ "${#G_DEPLOY[@]}" -gt 0 ]; then
    echo
    echo "the gateway's own account of the one-file change (remote: lines, medians): build $(median "${G_BUILD[@]}") s, rollout $(median "${G_DEPLOY[@]}") s"
fi
echo
echo "goal: one-file change ready <= floor + 0.5 s -> over the floor by $(calc "$GC - $FC") s"

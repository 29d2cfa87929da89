#!/usr/bin/env bash
# Buildpack push to ready: the python and nodejs sample apps (tests/fixtures/bp-python,
# six from PyPI; tests/fixtures/bp-nodejs, is-number from npm with a package-lock.json),
# built by the gateway's buildpacks. Times, from the start of `git push`, until the new
# content answers through the router (curl every 50 ms, running while the push runs):
#
# - cold: the first push of a new app (its cache volume empire-cache-<app> is new and
#   empty, so the dependency is downloaded and installed);
# - warm: a second push to it that changes one app file (app.py / server.js) but not the
#   dependency files (the build must print `reused`).
#
# Against, in the same run and interleaved: a hand-written Dockerfile build of the same
# app (FROM empire/stack-build:bookworm, installs the dependency with pip / npm ci in a
# layer of its own, then copies the app file) + `docker run` + first 200 with the new
# content; cold = `docker build --no-cache`, warm = the same one-file change with the
# layer cache. Also the slug size (du -sb /app in each image), the image sizes, and
# where the warm push's time goes (each remote: line is timestamped as it arrives).
# Repeats REPS times (default 3) and reports medians. Removes on exit everything it
# made: the gateway, its containers and app images, the cache volumes, the Dockerfile
# images and containers.
#
# Usage: bench/buildpack-push.sh [REPS]
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

REPS=${1:-3}
require_tools git ssh curl awk ss docker timeout du
require_empire
require_docker
export DOCKER_BUILDKIT=0 # the classic builder, as the gateway's /build API call

STACK_BUILD=empire/stack-build:bookworm
STACK_RUN=empire/stack-run:bookworm
for image in "$STACK_BUILD" "$STACK_RUN"; do
    docker image inspect "$image" >/dev/null 2>&1 ||
        die "$image is missing: run scripts/stack-images.sh first"
done
# The gateway hands the host's CA bundle to the build (BuildpackConfig::ca_bundle); the
# Dockerfile builds get the same file, so both reach PyPI and npm the same way.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
[ -r "$HOST_CA" ] || die "$HOST_CA is missing"

FIXTURES=$REPO_ROOT/tests/fixtures
SIX_VERSION=$(sed -n 's/^six==\([0-9.]*\).*/\1/p' "$FIXTURES/bp-python/requirements.txt")
[ -n "$SIX_VERSION" ] || die "tests/fixtures/bp-python/requirements.txt pins no six version"
grep -q '"is-number"' "$FIXTURES/bp-nodejs/package.json" ||
    die "tests/fixtures/bp-nodejs/package.json has no is-number dependency"
[ -f "$FIXTURES/bp-nodejs/package-lock.json" ] || die "tests/fixtures/bp-nodejs has no package-lock.json"

FLOOR_LABEL=empire.bench=$RUN_SUFFIX
FLOOR_REPO=empire-bench-bpfloor-$RUN_SUFFIX
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

# The apps' build leftovers and cache volumes; registered before start_gateway, so it
# runs after the gateway has stopped and removed its containers and images.
BP_APPS=()
cleanup_apps() {
    local app ids
    for app in "${BP_APPS[@]}"; do
        # build and slug containers of a build cut short (they carry no gateway label)
        ids=$(docker ps -aq --filter "name=empire-build-$app-v" --filter "name=empire-slug-$app-v")
        # shellcheck disable=SC2086
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
        ids=$(docker image ls -q --filter "label=empire.app=$app" | sort -u)
        # shellcheck disable=SC2086
        [ -z "$ids" ] || docker rmi -f $ids >/dev/null 2>&1 || true
        docker volume rm -f "empire-cache-$app" >/dev/null 2>&1 || true
    done
}
on_exit cleanup_apps

start_gateway

# --- the apps -----------------------------------------------------------------------

# body LANG MARKER: what the app answers once its source holds MARKER.
body() {
    case $1 in
    python) echo "Hello from Python ($2) with six $SIX_VERSION" ;;
    nodejs) echo "Hello from Node.js ($2): is-number($APP_PORT) is true" ;;
    esac
}
# app_file LANG: the one app file a change touches.
app_file() {
    case $1 in
    python) echo app.py ;;
    nodejs) echo server.js ;;
    esac
}
# put_marker LANG DIR MARKER: the fixture's app file, its greeting naming MARKER.
put_marker() {
    local f
    f=$(app_file "$1")
    case $1 in
    python) sed "s/Hello from Python with/Hello from Python ($3) with/" "$FIXTURES/bp-$1/$f" >"$2/$f" ;;
    nodejs) sed "s/Hello from Node.js:/Hello from Node.js ($3):/" "$FIXTURES/bp-$1/$f" >"$2/$f" ;;
    esac
    grep -qF "($3)" "$2/$f" || die "the greeting in tests/fixtures/bp-$1/$f changed: update put_marker"
}

# floor_dockerfile LANG DIR: the hand-written Dockerfile: dependency files, install, then
# the app file (so a change to the app file keeps the install layer).
floor_dockerfile() {
    case $1 in
    python)
        cat >"$2/Dockerfile" <<'DOCKERFILE'
FROM empire/stack-build:bookworm
COPY host-ca.crt /empire/host-ca.crt
ENV PIP_CERT=/empire/host-ca.crt
COPY --chown=empire:empire requirements.txt /app/
RUN python3 -m venv /app/.venv \
 && /app/.venv/bin/pip install --disable-pip-version-check --no-input --progress-bar off --no-cache-dir -r requirements.txt
COPY --chown=empire:empire Procfile app.py /app/
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 5000
CMD ["python", "app.py"]
DOCKERFILE
        ;;
    nodejs)
        cat >"$2/Dockerfile" <<'DOCKERFILE'
FROM empire/stack-build:bookworm
COPY host-ca.crt /empire/host-ca.crt
ENV NODE_EXTRA_CA_CERTS=/empire/host-ca.crt npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY --chown=empire:empire package.json package-lock.json /app/
RUN npm ci --cache /tmp/npm-cache && rm -rf /tmp/npm-cache
COPY --chown=empire:empire server.js /app/
EXPOSE 5000
CMD ["node", "server.js"]
DOCKERFILE
        ;;
    esac
}

# --- the gateway side ---------------------------------------------------------------

# gateway_push NAME APP DIR BODY: prints "<ready s> <push returned s>".
gateway_push() {
    local name=$1 app=$2 dir=$3 expect=$4 t0 ready end rc out=$BENCH_TMP/$1.log
    rm -f "$out.end"
    t0=$(now)
    (
        timeout "$PUSH_TIMEOUT" git -C "$dir" push "$(gw_url "$app")" main 2>&1 | stamp "$t0" >"$out"
        echo "$(now) ${PIPESTATUS[0]}" >"$out.end"
    ) &
    local pid=$!
    if ! ready=$(wait_for_body "http://127.0.0.1:$GW_ROUTER_PORT/" "$app.localhost" "$expect" "$PUSH_TIMEOUT" "$out.end"); then
        wait "$pid" || true
        die "$name: $app never answered with its new content; the push said: $(tail -15 "$out")"
    fi
    wait "$pid" || true
    read -r end rc <"$out.end"
    [ "$rc" -eq 0 ] || die "$name: the push failed (exit $rc) although the app answered: $(tail -15 "$out")"
    echo "$(secs_between "$t0" "$ready") $(secs_between "$t0" "$end")"
}

# stamp T0: prefixes each line of stdin with "[+S]", the seconds since T0 when it came
# (the gateway streams its remote: lines as its steps happen).
stamp() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '[+%s] %s\n' "$(secs_between "$1" "${EPOCHREALTIME/,/.}")" "$line"
    done
}

# at LOG PATTERN: the seconds since the push started when the first line matching
# PATTERN (grep -E) came; nothing if none did.
at() { grep -E -m1 -e "$2" "$1" | sed -n 's/^\[+\([0-9.]*\)\].*/\1/p'; }

# The steps of a buildpack push, as the first remote: line of each shows it:
# name|pattern. "compile" starts once detection has picked the buildpack.
STEPS=(
    "build starts|Building with buildpacks on"
    "compile starts|-----> (Python|Node.js) app detected"
    "compile done|-----> Discovering process types"
    "assembling starts|-----> Assembling the image"
    "image built|Built empire/"
    "rollout starts|-----> Starting processes for"
    "new release up|web\\.1 is up"
    "deployed|Deployed v[0-9]+ in"
)

# said LOG WHAT: seconds from the gateway's remote: lines ("Built … in 0.6s",
# "Deployed vN in 0.8s"); nothing if absent.
said() {
    case $2 in
    build) sed -n 's/.*Built .* in \([0-9.]*\)s.*/\1/p' "$1" | tail -1 ;;
    deploy) sed -n 's/.*Deployed v[0-9]* in \([0-9.]*\)s.*/\1/p' "$1" | tail -1 ;;
    esac
}

# slug_bytes IMAGE: the size of /app in IMAGE.
slug_bytes() { docker run --rm --entrypoint du "$1" -sb /app | awk '{ print $1 }'; }
image_bytes() { docker image inspect -f '{{.Size}}' "$1"; }
# mb BYTES [MINUS_BYTES]: BYTES - MINUS_BYTES in MB (10^6 bytes), 1 decimal, or in kB
# below 1 MB.
mb() {
    awk -v b="$1" -v m="${2:-0}" 'BEGIN { d = b - m
        if (d >= 1000000 || d <= -1000000) printf "%.1f MB", d / 1000000; else printf "%.0f kB", d / 1000 }'
}

declare -A R # R[<side>-<lang>-<cold|warm>]="<run> <run> …", and sizes
add() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; }

run_gateway() {
    local lang=$1 i=$2 app=bp$1-$RUN_SUFFIX-$2 dir=$BENCH_TMP/gw-$1-$2 r m f
    track_app "$app"
    BP_APPS+=("$app")
    mkdir -p "$dir"
    cp -a "$FIXTURES/bp-$lang/." "$dir/"
    f=$(app_file "$lang")
    m="gateway cold $app"
    put_marker "$lang" "$dir" "$m"
    git -C "$dir" init -q -b main
    git -C "$dir" add -A
    git -C "$dir" commit -q -m "$lang sample app"
    r=$(gateway_push "gw-$lang-cold-$i" "$app" "$dir" "$(body "$lang" "$m")")
    grep -q 'Installing dependencies' "$BENCH_TMP/gw-$lang-cold-$i.log" ||
        die "gw-$lang-cold-$i: the cold build installed no dependencies: $(tail -25 "$BENCH_TMP/gw-$lang-cold-$i.log")"
    add "gw-$lang-cold" "${r% *}"
    add "gw-$lang-cold-ret" "${r#* }"

    m="gateway warm $app"
    put_marker "$lang" "$dir" "$m"
    git -C "$dir" commit -q -am "one-file change: $f"
    r=$(gateway_push "gw-$lang-warm-$i" "$app" "$dir" "$(body "$lang" "$m")")
    grep -q 'Dependencies unchanged: reused' "$BENCH_TMP/gw-$lang-warm-$i.log" ||
        die "gw-$lang-warm-$i: the warm build did not reuse the cache: $(tail -25 "$BENCH_TMP/gw-$lang-warm-$i.log")"
    add "gw-$lang-warm" "${r% *}"
    add "gw-$lang-warm-ret" "${r#* }"
    local step
    for step in "${STEPS[@]}"; do
        r=$(at "$BENCH_TMP/gw-$lang-warm-$i.log" "${step#*|}")
        [ -z "$r" ] || add "gw-$lang-warm-at-${step%%|*}" "$r"
    done
    r=$(said "$BENCH_TMP/gw-$lang-warm-$i.log" build)
    [ -z "$r" ] || add "gw-$lang-warm-build" "$r"
    r=$(said "$BENCH_TMP/gw-$lang-warm-$i.log" deploy)
    [ -z "$r" ] || add "gw-$lang-warm-deploy" "$r"

    R[gw-$lang-slug]=$(slug_bytes "empire/$app:v2")
    R[gw-$lang-image]=$(image_bytes "empire/$app:v2")
    note "gateway $lang: cold ${R[gw-$lang-cold]##* } s, warm ${R[gw-$lang-warm]##* } s (load average $(cut -d' ' -f1 /proc/loadavg))"
}

# floor NAME CONTEXT TAG BODY [--no-cache]: docker build + docker run + first 200;
# prints seconds.
floor() {
    local name=$1 ctx=$2 tag=$3 expect=$4 port t0 ready
    shift 4
    port=$(free_port)
    t0=$(now)
    docker build -q "$@" -t "$tag" "$ctx" >"$BENCH_TMP/$name.build.log" 2>&1 ||
        die "$name: docker build failed: $(tail -15 "$BENCH_TMP/$name.build.log")"
    docker run -d --label "$FLOOR_LABEL" -e "PORT=$APP_PORT" -p "127.0.0.1:$port:$APP_PORT" "$tag" >/dev/null
    ready=$(wait_for_body "http://127.0.0.1:$port/" "127.0.0.1" "$expect" 120) ||
        die "$name: the Dockerfile container never answered"
    secs_between "$t0" "$ready"
}

run_floor() {
    local lang=$1 i=$2 ctx=$BENCH_TMP/floor-$1-$2 m tag
    mkdir -p "$ctx"
    cp -a "$FIXTURES/bp-$lang/." "$ctx/"
    cp "$HOST_CA" "$ctx/host-ca.crt"
    floor_dockerfile "$lang" "$ctx"
    m="dockerfile cold $lang $RUN_SUFFIX $i"
    put_marker "$lang" "$ctx" "$m"
    add "df-$lang-cold" "$(floor "df-$lang-cold-$i" "$ctx" "$FLOOR_REPO:$lang-$i-cold" "$(body "$lang" "$m")" --no-cache)"
    m="dockerfile warm $lang $RUN_SUFFIX $i"
    put_marker "$lang" "$ctx" "$m"
    tag=$FLOOR_REPO:$lang-$i-warm
    add "df-$lang-warm" "$(floor "df-$lang-warm-$i" "$ctx" "$tag" "$(body "$lang" "$m")")"
    R[df-$lang-slug]=$(slug_bytes "$tag")
    R[df-$lang-image]=$(image_bytes "$tag")
    note "Dockerfile $lang: cold ${R[df-$lang-cold]##* } s, warm ${R[df-$lang-warm]##* } s (load average $(cut -d' ' -f1 /proc/loadavg))"
}

for ((i = 1; i <= REPS; i++)); do
    log "repetition $i/$REPS"
    for lang in python nodejs; do
        # alternate which side goes first, so drift on a busy machine hits both alike
        if ((i % 2)); then
            run_gateway "$lang" "$i"
            run_floor "$lang" "$i"
        else
            run_floor "$lang" "$i"
            run_gateway "$lang" "$i"
        fi
    done
    cleanup_floor
done

# --- report -------------------------------------------------------------------------

med() {
    # shellcheck disable=SC2086
    median ${R[$1]}
}
ROWS=()
for lang in python nodejs; do
    for kind in cold warm; do
        g=$(med "gw-$lang-$kind") d=$(med "df-$lang-$kind")
        ROWS+=("$lang $kind|$g|$(med "gw-$lang-$kind-ret")|$d|$(calc "$g - $d")|$(calc "$g / $d")|${R[gw-$lang-$kind]}|${R[df-$lang-$kind]}")
    done
done
SIZES=()
RUN_STACK=$(image_bytes "$STACK_RUN") BUILD_STACK=$(image_bytes "$STACK_BUILD")
for lang in python nodejs; do
    SIZES+=("$lang|$(mb "${R[gw-$lang-slug]}")|$(mb "${R[gw-$lang-image]}")|$(mb "${R[gw-$lang-image]}" "$RUN_STACK")|$(mb "${R[df-$lang-slug]}")|$(mb "${R[df-$lang-image]}")|$(mb "${R[df-$lang-image]}" "$BUILD_STACK")")
done

echo
echo "buildpack push to ready, $(date -u +%Y-%m-%dT%H:%MZ); $(machine_summary)"
echo "$REPS repetitions, medians in seconds; 'ready' = the new content answers (curl every 50 ms);"
echo "cold = a new app (empty cache volume) / docker build --no-cache; warm = a one-file change, dependencies unchanged / the layer cache"
echo
table "push|gateway: ready|gateway: push returned|Dockerfile: build+run+200|ready - Dockerfile|ratio|runs gateway (ready)|runs Dockerfile" \
    "${ROWS[@]}"
echo
for lang in python nodejs; do
    if [ -n "${R[gw-$lang-warm-build]:-}" ] && [ -n "${R[gw-$lang-warm-deploy]:-}" ]; then
        echo "the gateway's own account of the warm $lang push (remote: lines, medians): build $(med "gw-$lang-warm-build") s, rollout $(med "gw-$lang-warm-deploy") s"
    fi
done
echo
echo "where the warm push's time goes: seconds from the start of git push to the first remote: line of each step (medians)"
echo
STEP_ROWS=() head="app"
for step in "${STEPS[@]}"; do head="$head|${step%%|*}"; done
head="$head|ready (router)"
for lang in python nodejs; do
    row=$lang
    for step in "${STEPS[@]}"; do
        if [ -n "${R[gw-$lang-warm-at-${step%%|*}]:-}" ]; then
            row="$row|$(med "gw-$lang-warm-at-${step%%|*}")"
        else
            row="$row|?"
        fi
    done
    STEP_ROWS+=("$row|$(med "gw-$lang-warm")")
done
table "$head" "${STEP_ROWS[@]}"
echo
echo "sizes (MB = 10^6 bytes): slug = du -sb /app in the image; image = docker image inspect .Size;"
echo "$STACK_RUN $(mb "$RUN_STACK"), $STACK_BUILD $(mb "$BUILD_STACK")"
echo
table "app|buildpack slug|buildpack image|over stack-run|Dockerfile /app|Dockerfile image|over stack-build" "${SIZES[@]}"
echo
for lang in python nodejs; do
    w=$(med "gw-$lang-warm")
    if awk -v w="$w" 'BEGIN { exit !(w <= 5) }'; then verdict=met; else verdict="NOT met"; fi
    echo "goal: warm $lang push ready <= 5 s -> $w s: $verdict"
done

#!/usr/bin/env bash
# Push memory: the gateway's resident memory while it receives a >= 500 MiB push (one
# commit of incompressible random files, 1 MiB each, plus the small Dockerfile app,
# generated once into bench/.cache/). Samples every 100 ms, from /proc/<pid>/status,
# VmRSS and VmHWM of the `empire server` process and of each of its descendants (git
# receive-pack, the index-pack or unpack-objects it starts, the `empire hook
# pre-receive` hook), and reports the growth over the idle RSS, split into the receive
# phase (until the hook starts: the pack is in) and the pipeline phase (hook running:
# build context, docker build, deploy). The build sends the whole tree as the Docker
# context; whether that succeeds does not matter here, the script says what happened.
#
# Usage: bench/push-memory.sh [MIB]   (default 500; the data is MIB MiB of random files)
#        bench/push-memory.sh --prepare [MIB]   (only generate the data)
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

PREPARE=0
if [ "${1:-}" = --prepare ]; then PREPARE=1; shift; fi
MIB=${1:-500}
# 1 MiB files: 500+ objects, more than transfer.unpackLimit (100), so git receives the
# pack with index-pack and keeps it, as for any large push (fewer objects would be
# exploded into loose objects by unpack-objects).
FILE_MIB=1
BIG=$CACHE_DIR/random-${MIB}mib-${FILE_MIB}mib-files.git
require_tools git ssh curl awk ss ps docker timeout

# ensure_big_repo: a bare repo whose main has one commit: data/random-NNN.bin (FILE_MIB
# MiB each from /dev/urandom, MIB MiB in all), Dockerfile and index.html; packed.
ensure_big_repo() {
    [ -f "$BIG/bench-complete" ] && return 0
    log "Generating $MIB MiB of random files into $BIG (once)"
    local wt=$BIG.wt n i
    rm -rf "$BIG" "$wt"
    git init -q --bare -b main "$BIG"
    make_small_app "$wt" "pushed with $MIB MiB of random data"
    mkdir -p "$wt/data"
    n=$(((MIB + FILE_MIB - 1) / FILE_MIB))
    for ((i = 1; i <= n; i++)); do
        head -c $((FILE_MIB * 1024 * 1024)) /dev/urandom >"$(printf '%s/data/random-%03d.bin' "$wt" "$i")"
    done
    git -C "$wt" add -A
    git -C "$wt" commit -q -m "$MIB MiB of random data"
    git -C "$wt" push -q "$BIG" main
    git --git-dir="$BIG" repack -a -d -q
    rm -rf "$wt"
    git --git-dir="$BIG" count-objects -vH >"$BIG/bench-complete"
}
ensure_big_repo
PACK=$(awk '$1 == "size-pack:" { print $2, $3 }' "$BIG/bench-complete")
if [ "$PREPARE" = 1 ]; then
    echo "$BIG: pack $PACK"
    exit 0
fi
require_empire
require_docker
log "repo: $BIG, pack $PACK"
cat "$BIG"/objects/pack/* >/dev/null

start_gateway
APP=mem-$RUN_SUFFIX
track_app "$APP"

# status_kb PID: "VmRSS VmHWM RssAnon RssFile" in kB, read without forking (zeros if
# gone). RssAnon is the process's own memory (heap, stacks); RssFile is mapped files
# (the binary, libraries, and pack files that libgit2 maps to read objects), which the
# kernel can drop.
status_kb() {
    local k v _ rss=0 hwm=0 anon=0 file=0
    if [ -r "/proc/$1/status" ]; then
        while read -r k v _; do
            case $k in
            VmRSS:) rss=$v ;;
            VmHWM:) hwm=$v ;;
            RssAnon:) anon=$v ;;
            RssFile:) file=$v ;;
            esac
        done <"/proc/$1/status" 2>/dev/null || true
    fi
    echo "$rss $hwm $anon $file"
}

# sampler OUT STOPFILE: one line per 100 ms:
#   <time> <server VmRSS VmHWM RssAnon RssFile> [<pid>|<what>|<VmRSS>|<VmHWM> ...]
# (the descendants of the server, named by argv[0] and argv[1]).
# Whenever the server's RssFile grows, its file mappings are read from
# /proc/<pid>/smaps; the three largest of the reading with the largest total go to
# $PEAK_MAPS.
sampler() {
    local out=$1 stop=$2 line pid what r h _ srv file max_file=0 best=0 total
    while [ ! -e "$stop" ]; do
        srv=$(status_kb "$GW_PID")
        line="${EPOCHREALTIME/,/.} $srv"
        file=${srv##* }
        if [ "$file" -gt "$max_file" ]; then
            max_file=$file
            awk '$1 ~ /^[0-9a-f]+-[0-9a-f]+$/ { path = ($6 == "") ? "[anon]" : $6 }
                 $1 == "Rss:" { rss[path] += $2 }
                 END { for (p in rss) if (p !~ /^\[/) printf "%d %s\n", rss[p], p }' \
                "/proc/$GW_PID/smaps" 2>/dev/null | sort -rn >"$PEAK_MAPS.now" || true
            total=$(awk '{ t += $1 } END { print t + 0 }' "$PEAK_MAPS.now")
            if [ "$total" -gt "$best" ]; then
                best=$total
                head -3 "$PEAK_MAPS.now" >"$PEAK_MAPS"
            fi
        fi
        while read -r pid what; do
            read -r r h _ <<<"$(status_kb "$pid")"
            line="$line $pid|$what|$r|$h"
        done < <(ps -e -o pid=,ppid=,args= | awk -v root="$GW_PID" -v bin="${EMPIRE_BIN##*/}" '
            { pid[NR] = $1; ppid[NR] = $2
              w = $3; sub(".*/", "", w); if (w == bin) w = "empire"
              if ($4 != "" && $4 !~ /^-/) w = w "-" $4
              what[NR] = w }
            END { inside[root] = 1; changed = 1
                  while (changed) { changed = 0
                      for (i = 1; i <= NR; i++) if (!(pid[i] in inside) && (ppid[i] in inside)) { inside[pid[i]] = 1; changed = 1 } }
                  for (i = 1; i <= NR; i++) if (pid[i] != root && (pid[i] in inside)) print pid[i], what[i] }')
        echo "$line" >>"$out"
        sleep 0.1
    done
}

sleep 2 # let the idle gateway settle
read -r IDLE_RSS IDLE_HWM IDLE_ANON IDLE_FILE <<<"$(status_kb "$GW_PID")"
log "idle gateway: VmRSS $((IDLE_RSS / 1024)) MiB, VmHWM $((IDLE_HWM / 1024)) MiB"

SAMPLES=$BENCH_TMP/samples
PEAK_MAPS=$BENCH_TMP/peak-maps
STOP=$BENCH_TMP/stop-sampler
sampler "$SAMPLES" "$STOP" &
SAMPLER_PID=$!
# shellcheck disable=SC2016 # expanded when the trap runs
on_exit 'touch "$STOP"; wait "$SAMPLER_PID" 2>/dev/null || true'
sleep 0.3

OUT=$BENCH_TMP/push.log
T0=$(now)
RC=0
timeout "$PUSH_TIMEOUT" git --git-dir="$BIG" push --progress "$(gw_url "$APP")" main >"$OUT" 2>&1 || RC=$?
T1=$(now)
sleep 0.5
touch "$STOP"
wait "$SAMPLER_PID" 2>/dev/null || true
read -r END_RSS END_HWM END_ANON END_FILE <<<"$(status_kb "$GW_PID")"
tr '\r' '\n' <"$OUT" >"$OUT.lines"

# The outcome in words.
if [ "$RC" -eq 124 ]; then
    OUTCOME="did not finish within $PUSH_TIMEOUT s (stopped by timeout); last output: $(grep -v '^ *$' "$OUT.lines" | tail -2 | tr '\n' ' ')"
elif [ "$RC" -eq 0 ]; then
    OUTCOME="accepted and deployed (exit 0)"
    if wait_for_body "http://127.0.0.1:$GW_ROUTER_PORT/" "$APP.localhost" "pushed with $MIB MiB of random data" 10 >/dev/null; then
        OUTCOME="$OUTCOME; the app answers through the router"
    fi
elif grep -q "pre-receive hook declined" "$OUT.lines"; then
    OUTCOME="received, then refused by the pipeline (exit $RC): $(grep 'remote:' "$OUT.lines" | grep -v '^remote: *$' | tail -2 | sed 's/^remote: *//' | tr '\n' ' ')"
else
    OUTCOME="failed during the transfer (exit $RC): $(tail -3 "$OUT.lines" | tr '\n' ' ')"
fi
log "push: $OUTCOME"

# Per phase: receive = samples before any hook process (`empire hook pre-receive`, or
# whatever runs hooks/pre-receive) appeared;
# pipeline = from then on.
REPORT=$(awk '
    function mib(k) { return sprintf("%.1f", k / 1024) }
    { hook = 0; for (i = 6; i <= NF; i++) if ($i ~ /\|[^|]*(-hook|pre-receive)\|/) hook = 1
      if (hook) phase = "pipeline"; else if (phase == "") phase = "receive"
      if ($2 > rss[phase]) rss[phase] = $2
      if ($4 > anon[phase]) anon[phase] = $4
      if ($5 > file[phase]) file[phase] = $5
      sum = 0
      for (i = 6; i <= NF; i++) { split($i, c, "|"); sum += c[3]
          if (c[4] > chwm[c[2]]) chwm[c[2]] = c[4]
          if (c[3] > crss[c[2]]) crss[c[2]] = c[3] }
      if (sum > csum[phase]) csum[phase] = sum
      n[phase]++ }
    END {
      for (p in n) printf "%s %d %d %d %d %d\n", p, rss[p], anon[p], file[p], csum[p], n[p]
      for (k in chwm) if (crss[k] > 0) printf "child %s %s %s\n", k, mib(crss[k]), mib(chwm[k]) }' "$SAMPLES")
# field PHASE N: column N of the phase line (kB), 0 when the phase has no sample.
field() { awk -v k="$1" -v f="$2" '$1 == k { v = $f } END { print v + 0 }' <<<"$REPORT"; }
mib() { calc1 "$1 / 1024"; }
growth() { if [ "$1" -gt 0 ]; then calc1 "($1 - $2) / 1024"; else echo "-"; fi; }
GROWTH_RECV=$(growth "$(field receive 2)" "$IDLE_RSS")
GROWTH_PIPE=$(growth "$(field pipeline 2)" "$IDLE_RSS")
GROWTH_ANON_RECV=$(growth "$(field receive 3)" "$IDLE_ANON")
GROWTH_ANON_PIPE=$(growth "$(field pipeline 3)" "$IDLE_ANON")
HWM_GROWTH=$(calc1 "($END_HWM - $IDLE_RSS) / 1024")
PUSH_S=$(secs_between "$T0" "$T1")
SENT=$(sed -En 's/.*Writing objects: 100% \([0-9/]*\), ([0-9.]+ ([KMG]iB|bytes)) .*/\1/p' "$OUT.lines" | tail -1)

echo
echo "push memory, $(date -u +%Y-%m-%dT%H:%MZ); $(machine_summary)"
echo "pushed: one commit, $MIB MiB of random files in ${FILE_MIB} MiB files + a small Dockerfile app; pack $PACK; sent ${SENT:-?}; push took $PUSH_S s"
echo "outcome: $OUTCOME"
echo "samples: every 100 ms; receive phase (until the hook starts) $(field receive 6) samples, pipeline phase $(field pipeline 6) samples"
echo
table "empire server (MiB)|idle|peak, receive phase|peak, pipeline phase|growth, receive|growth, pipeline|after the push" \
    "VmRSS|$(mib "$IDLE_RSS")|$(mib "$(field receive 2)")|$(mib "$(field pipeline 2)")|$GROWTH_RECV|$GROWTH_PIPE|$(mib "$END_RSS")" \
    "RssAnon (own memory)|$(mib "$IDLE_ANON")|$(mib "$(field receive 3)")|$(mib "$(field pipeline 3)")|$GROWTH_ANON_RECV|$GROWTH_ANON_PIPE|$(mib "$END_ANON")" \
    "RssFile (mapped files)|$(mib "$IDLE_FILE")|$(mib "$(field receive 4)")|$(mib "$(field pipeline 4)")|$(growth "$(field receive 4)" "$IDLE_FILE")|$(growth "$(field pipeline 4)" "$IDLE_FILE")|$(mib "$END_FILE")" \
    "VmHWM (peak of its life)|$(mib "$IDLE_HWM")|||||$(mib "$END_HWM")"
echo
if [ -s "$PEAK_MAPS" ]; then
    echo "the server's largest file mappings at its RssFile peak (MiB, path):"
    awk '{ printf "  %8.1f  %s\n", $1 / 1024, $2 }' "$PEAK_MAPS"
    echo
fi
ROWS=("child process (by argv)|peak VmRSS sampled (MiB)|VmHWM, last sample (MiB)")
while read -r _ k rss hwm; do
    ROWS+=("$k|$rss|$hwm")
done < <(grep '^child ' <<<"$REPORT" | sort)
ROWS+=("all descendants, peak of the sum, receive phase|$(mib "$(field receive 5)")|")
ROWS+=("all descendants, peak of the sum, pipeline phase|$(mib "$(field pipeline 5)")|")
table "${ROWS[@]}"
echo
echo "goal: growth of the server's RSS < 64 MiB -> receive phase: VmRSS +$GROWTH_RECV MiB (own memory +$GROWTH_ANON_RECV);"
echo "      pipeline phase: VmRSS +$GROWTH_PIPE MiB (own memory +$GROWTH_ANON_PIPE); VmHWM after the push - idle VmRSS: $HWM_GROWTH MiB"

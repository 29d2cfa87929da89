#!/usr/bin/env bash
# Receive throughput: the same large real history (>= 100 MiB pack, thousands of commits)
# pushed over SSH to Empire's gitd and to OpenSSH's sshd running `git receive-pack` on a
# bare repo, 3 runs each, interleaved; reports the medians and the ratio gitd / sshd.
#
# The build is excluded on the gitd side by pushing to a branch the gateway does not
# deploy: the pre-receive hook refuses it, and git runs that hook only after the whole
# pack has been received, indexed (index-pack) and checked for connectivity. So the time
# to the refusal is the receive time plus one hook round-trip to the daemon. Two floors
# run on sshd in the same script, and one without SSH:
#   sshd (accepted):  a plain bare repo, the push succeeds (ref update + quarantine moved);
#   sshd (refused):   the same bare repo with a pre-receive hook that reads stdin and
#                     exits 1, i.e. exactly the git work of the gitd run;
#   local (accepted): `git push file://…`: git receive-pack on pipes, no SSH at all (the
#                     lower bound of any SSH server).
#
# Usage: bench/receive-throughput.sh [RUNS]   (RUNS defaults to 3)
#        bench/receive-throughput.sh --prepare   (only generate the history)
# The history is generated once into bench/.cache/history.git (minutes; see
# ensure_history) and reused.
set -eu
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

PREPARE=0
if [ "${1:-}" = --prepare ]; then PREPARE=1; shift; fi
RUNS=${1:-3}
HISTORY=$CACHE_DIR/history.git
MIN_PACK_KIB=$((100 * 1024))
BRANCH=refs/heads/bench-receive

require_tools git ssh ssh-keygen curl awk ss tar /usr/sbin/sshd timeout

# --- the history --------------------------------------------------------------------

# _hist_commit SRC DEST MSG [TAR-EXCLUDES...]: replaces DEST in the work tree by a copy of
# SRC and commits it (no commit when nothing changed).
_hist_n=0
_hist_commit() {
    local src=$1 dest=$2 msg=$3
    shift 3
    rm -rf "${GIT_WORK_TREE:?}/$dest"
    mkdir -p "$(dirname "$GIT_WORK_TREE/$dest")"
    tar -C "$(dirname "$src")" "$@" -cf - "$(basename "$src")" |
        tar -C "$(dirname "$GIT_WORK_TREE/$dest")" -xf -
    if [ "$(basename "$src")" != "$(basename "$dest")" ]; then
        mv "$(dirname "$GIT_WORK_TREE/$dest")/$(basename "$src")" "$GIT_WORK_TREE/$dest"
    fi
    git add -A -f -- "$dest"
    if ! git diff --cached --quiet; then
        _hist_n=$((_hist_n + 1))
        GIT_AUTHOR_DATE="@$((1600000000 + _hist_n * 600)) +0000" \
            GIT_COMMITTER_DATE="@$((1600000000 + _hist_n * 600)) +0000" \
            git commit -q --no-verify -m "$msg"
    fi
}

_hist_pack_kib() {
    git gc --quiet
    git count-objects -v | awk '$1 == "size-pack:" { print $2 }'
}

# ensure_history: generates $HISTORY unless it is complete. Sources, in order, until the
# packed size (after git gc) reaches 100 MiB:
#   1. every crate under ~/.cargo/registry/src/*/, one commit per crate version, at
#      rust/<crate>/ (versions of one crate replace each other: real deltas);
#   2. the Python standard library of every ~/.pyenv version, oldest first, one commit
#      per top-level module or package at python/Lib/<entry> (a version replaces the
#      previous one file by file, like upgrades in a real history);
#   3. /usr/include, one commit per top-level entry;
#   4. /usr/share/perl and /usr/share/vim, one commit per top-level entry;
#   5. the Python of /usr/lib/google-cloud-sdk/lib (vendored libraries, then its own
#      packages), one commit per package, until the pack is large enough.
ensure_history() {
    if [ -f "$HISTORY/bench-history-complete" ]; then
        return 0
    fi
    log "Generating the history into $HISTORY (once; takes a while)"
    local build=$CACHE_DIR/history.tmp
    rm -rf "$build"
    mkdir -p "$build/wt"
    git init -q --bare -b main "$build/repo.git"
    (
        export GIT_DIR=$build/repo.git GIT_WORK_TREE=$build/wt
        git config feature.manyFiles true
        git config gc.auto 0
        size=0
        _done() {
            size=$(_hist_pack_kib)
            note "after $1: $(git rev-list --count HEAD) commits, pack $((size / 1024)) MiB"
            [ "$size" -ge "$MIN_PACK_KIB" ]
        }
        # 1. crates
        for src in $(printf '%s\n' "$HOME"/.cargo/registry/src/*/*/ | sed 's:/$::' | sort -V); do
            entry=$(basename "$src")
            name=${entry%-[0-9]*}
            _hist_commit "$src" "rust/$name" "$entry"
        done
        _done "crates" && exit 0
        # 2. python standard libraries
        for v in $(find "$HOME/.pyenv/versions" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V); do
            lib=$(find "$HOME/.pyenv/versions/$v/lib" -mindepth 1 -maxdepth 1 -name 'python[0-9]*' -type d 2>/dev/null | sort | head -1)
            [ -n "$lib" ] || continue
            for src in "$lib"/*; do
                entry=$(basename "$src")
                case "$entry" in
                __pycache__ | site-packages | lib-dynload | config-* | *.pyc | *.pyo) continue ;;
                esac
                _hist_commit "$src" "python/Lib/$entry" "python $v: $entry" \
                    --exclude=__pycache__ --exclude='*.pyc' --exclude='*.pyo'
            done
            # modules this version no longer has
            for src in "$GIT_WORK_TREE"/python/Lib/*; do
                entry=$(basename "$src")
                if [ ! -e "$lib/$entry" ]; then
                    git rm -r -q --cached -- "python/Lib/$entry"
                    rm -rf "${src:?}"
                fi
            done
            git diff --cached --quiet || {
                _hist_n=$((_hist_n + 1))
                git commit -q -m "python $v: remove dropped modules"
            }
        done
        _done "python" && exit 0
        # 3. C headers
        for src in /usr/include/*; do
            _hist_commit "$src" "c/include/$(basename "$src")" "include: $(basename "$src")"
        done
        _done "/usr/include" && exit 0
        # 4. perl and vim runtime
        for src in /usr/share/perl/*/* /usr/share/vim/*/*; do
            [ -e "$src" ] || continue
            _hist_commit "$src" "share/${src#/usr/share/}" "share: ${src#/usr/share/}"
        done
        _done "/usr/share/perl and vim" && exit 0
        # 5. the Google Cloud SDK's Python (vendored libraries, then its own packages)
        local_n=0
        for src in /usr/lib/google-cloud-sdk/lib/third_party/* \
            /usr/lib/google-cloud-sdk/lib/googlecloudsdk/*/* \
            /usr/lib/google-cloud-sdk/lib/surface/*; do
            [ -e "$src" ] || continue
            entry=${src#/usr/lib/google-cloud-sdk/}
            case "$entry" in */__pycache__ | *.pyc) continue ;; esac
            _hist_commit "$src" "gcloud/$entry" "gcloud: $entry" \
                --exclude=__pycache__ --exclude='*.pyc'
            local_n=$((local_n + 1))
            if [ $((local_n % 200)) -eq 0 ]; then
                _done "gcloud sdk ($local_n entries)" && exit 0
            fi
        done
        _done "gcloud sdk" && exit 0
        echo "the sources give only $((size / 1024)) MiB packed, less than 100 MiB" >&2
        exit 1
    )
    rm -rf "$HISTORY" "$build/wt"
    mv "$build/repo.git" "$HISTORY"
    rm -rf "$build"
    {
        echo "generated $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname)"
        echo "commits $(git --git-dir="$HISTORY" rev-list --count main)"
        git --git-dir="$HISTORY" count-objects -vH
    } >"$HISTORY/bench-history-complete"
}

# --- sshd ---------------------------------------------------------------------------

SSHD_PID=""
# start_sshd: OpenSSH's sshd in the foreground on a loopback port, with its own config,
# host key and AuthorizedKeysFile in $BENCH_TMP/sshd (the bench key only).
start_sshd() {
    local dir=$BENCH_TMP/sshd user i
    user=$(id -un)
    mkdir -p "$dir"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519_key"
    cp "$BENCH_KEY.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    SSHD_PORT=$(free_port)
    cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel ERROR
SetEnv HOME=$dir/home
EOF
    # The session's HOME is an empty dir: as for a dedicated git account, no rc file of
    # this machine's user (here: pyenv's init in ~/.bashrc, which bash reads when started
    # by sshd) runs before git receive-pack. The gateway reads no rc file either.
    mkdir -p "$dir/home"
    # sshd running as root needs its privilege separation directory (Debian makes it
    # when the service starts; we do not start the service).
    [ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd
    /usr/sbin/sshd -D -e -p "$SSHD_PORT" -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    SSHD_PID=$!
    # shellcheck disable=SC2016 # expanded when the trap runs
    on_exit 'stop_pid "$SSHD_PID" 5'
    for ((i = 0; i < 100; i++)); do
        # shellcheck disable=SC2086 # SSH_OPTS is a list of options
        if ssh $SSH_OPTS -p "$SSHD_PORT" "$user@127.0.0.1" true 2>/dev/null; then
            SSHD_USER=$user
            log "sshd pid $SSHD_PID on :$SSHD_PORT ($(/usr/sbin/sshd -V 2>&1 | head -1))"
            return 0
        fi
        kill -0 "$SSHD_PID" 2>/dev/null || die "sshd exited: $(cat "$dir/sshd.log")"
        sleep 0.1
    done
    die "sshd does not accept the bench key: $(cat "$dir/sshd.log")"
}

# --- one timed push -----------------------------------------------------------------

# timed_push NAME URL EXPECT LOG [PUSH-OPTIONS...]: pushes main of $HISTORY (or of
# $PUSH_SRC) to $BRANCH
# at URL; EXPECT is "ok" (must succeed) or "refused" (must be refused by the pre-receive
# hook after the pack was received). Prints the seconds.
timed_push() {
    local name=$1 url=$2 expect=$3 out=$4 t0 t1 rc=0 c0=0
    shift 4
    [ -z "${CPU_PID:-}" ] || c0=$(cpu_ticks "$CPU_PID")
    t0=$(now)
    timeout "$PUSH_TIMEOUT" git --git-dir="${PUSH_SRC:-$HISTORY}" push --progress "$@" "$url" "main:$BRANCH" >"$out" 2>&1 || rc=$?
    t1=$(now)
    tr '\r' '\n' <"$out" >"$out.lines"
    case "$expect" in
    ok)
        [ "$rc" -eq 0 ] || die "$name: push failed (exit $rc): $(tail -5 "$out.lines")"
        ;;
    refused)
        [ "$rc" -ne 0 ] || die "$name: push to $BRANCH was accepted; expected a refusal"
        grep -q "pre-receive hook declined" "$out.lines" ||
            die "$name: push failed, but not by the pre-receive hook: $(tail -8 "$out.lines")"
        if grep -q "unpack failed\|unpacker error" "$out.lines"; then
            die "$name: the pack was not received: $(tail -8 "$out.lines")"
        fi
        ;;
    esac
    if [ -n "${CPU_PID:-}" ]; then
        sleep 0.5 # the server reaps its children (whose CPU time then counts) a moment later
        calc "($(cpu_ticks "$CPU_PID") - $c0) / $CLK_TCK" >"$out.cpu"
    fi
    secs_between "$t0" "$t1"
}

# cpu_ticks PID: CPU time of PID and of its children that it has waited for (utime +
# stime + cutime + cstime), in clock ticks. For a server, that is everything its
# connections ran: SSH, git receive-pack, index-pack, the hook.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat"; }

# pushed_mib LOG: the size of the pack the client sent, in MiB, from its progress.
pushed_mib() {
    sed -En 's/.*Writing objects: 100% \([0-9/]*\), ([0-9.]+) ([KMG]iB|bytes) .*/\1 \2/p' "$1.lines" |
        tail -1 | awk '{ f = ($2 == "GiB") ? 1024 : ($2 == "MiB") ? 1 : ($2 == "KiB") ? 1 / 1024 : 1 / 1048576
                         printf "%.1f", $1 * f }'
}
# pushed_summary LOG: "N objects, X MiB" from the push's progress.
pushed_summary() {
    local objs
    objs=$(grep -o 'Total [0-9]*' "$1.lines" | tail -1 | awk '{ print $2 }')
    echo "${objs:-?} objects, $(pushed_mib "$1") MiB"
}

# --- main ---------------------------------------------------------------------------

GIT_BIN=$(command -v git)
ensure_history
if [ "$PREPARE" = 1 ]; then
    cat "$HISTORY/bench-history-complete"
    exit 0
fi
require_empire
HIST_COMMITS=$(git --git-dir="$HISTORY" rev-list --count main)
HIST_PACK=$(git --git-dir="$HISTORY" count-objects -vH | awk '$1 == "size-pack:" { print $2, $3 }')
log "history: $HIST_COMMITS commits, pack $HIST_PACK ($HISTORY)"
# Warm the page cache for the client's side (both servers read the same files).
cat "$HISTORY"/objects/pack/* >/dev/null

start_gateway
start_sshd
APP=recv-$RUN_SUFFIX
track_app "$APP"
GW_URL=$(gw_url "$APP")
SSHD_REPO=$BENCH_TMP/sshd-repo.git
SSHD_URL="ssh://$SSHD_USER@127.0.0.1:$SSHD_PORT$SSHD_REPO"
# sshd's sessions get sshd's default PATH; run the same git as the gateway does (the
# gateway inherits this script's PATH and runs `git receive-pack`).
SSHD_RP=(--receive-pack="$GIT_BIN receive-pack")

# What each side negotiated (the client's defaults; nothing is forced).
cipher_of() {
    # shellcheck disable=SC2086 # SSH_OPTS is a list of options
    ssh -v $SSH_OPTS -p "$1" "$2@127.0.0.1" true 2>&1 |
        awk '/kex: server->client cipher:/ { print $5; exit }'
}
GW_CIPHER=$(cipher_of "$GW_SSH_PORT" git || true)
SSHD_CIPHER=$(cipher_of "$SSHD_PORT" "$SSHD_USER")
note "ciphers: gitd ${GW_CIPHER:-?}, sshd ${SSHD_CIPHER:-?}"

new_sshd_repo() {
    rm -rf "$SSHD_REPO"
    git init -q --bare "$SSHD_REPO"
    if [ "$1" = refused ]; then
        printf '#!/bin/sh\ncat >/dev/null\necho "refused by the benchmark floor hook" >&2\nexit 1\n' \
            >"$SSHD_REPO/hooks/pre-receive"
        chmod +x "$SSHD_REPO/hooks/pre-receive"
    fi
}

LOCAL_REPO=$BENCH_TMP/local-repo.git
GW_T=() ACC_T=() REF_T=() LOC_T=() GW_S=() ACC_S=() GW_C=() ACC_C=() REF_C=()
# The small app (4 objects): the fixed cost of one push on each side (connection, key
# exchange, authentication, session, git start, hook).
make_small_app "$BENCH_TMP/small" "small push"
SMALL=$BENCH_TMP/small/.git
# run_side SIDE RUN: one timed push to SIDE.
run_side() {
    local t
    case $1 in
    gitd)
        t=$(CPU_PID=$GW_PID timed_push gitd "$GW_URL" refused "$BENCH_TMP/gitd-$2.log")
        GW_T+=("$t")
        GW_C+=("$(cat "$BENCH_TMP/gitd-$2.log.cpu")")
        note "gitd (refused by empire's hook): $t s, server CPU ${GW_C[-1]} s  ($(pushed_summary "$BENCH_TMP/gitd-$2.log"))"
        [ "$2" -gt 1 ] || note "gitd said: $(grep 'remote:' "$BENCH_TMP/gitd-1.log.lines" | grep -v 'Resolving\|Counting\|Compressing' | tail -3 | tr '\n' ' ')"
        ;;
    accepted)
        new_sshd_repo accepted
        t=$(CPU_PID=$SSHD_PID timed_push sshd-accepted "$SSHD_URL" ok "$BENCH_TMP/sshd-acc-$2.log" "${SSHD_RP[@]}")
        ACC_T+=("$t")
        ACC_C+=("$(cat "$BENCH_TMP/sshd-acc-$2.log.cpu")")
        note "sshd (accepted):                 $t s, server CPU ${ACC_C[-1]} s  ($(pushed_summary "$BENCH_TMP/sshd-acc-$2.log"))"
        rm -rf "$SSHD_REPO"
        ;;
    refused)
        new_sshd_repo refused
        t=$(CPU_PID=$SSHD_PID timed_push sshd-refused "$SSHD_URL" refused "$BENCH_TMP/sshd-ref-$2.log" "${SSHD_RP[@]}")
        REF_T+=("$t")
        REF_C+=("$(cat "$BENCH_TMP/sshd-ref-$2.log.cpu")")
        note "sshd (refused by a hook):        $t s, server CPU ${REF_C[-1]} s"
        rm -rf "$SSHD_REPO"
        ;;
    small)
        t=$(PUSH_SRC=$SMALL timed_push gitd-small "$GW_URL" refused "$BENCH_TMP/gitd-small-$2.log")
        GW_S+=("$t")
        new_sshd_repo accepted
        t=$(PUSH_SRC=$SMALL timed_push sshd-small "$SSHD_URL" ok "$BENCH_TMP/sshd-small-$2.log" "${SSHD_RP[@]}")
        ACC_S+=("$t")
        rm -rf "$SSHD_REPO"
        note "small push (fixed cost):         gitd ${GW_S[-1]} s, sshd ${ACC_S[-1]} s"
        ;;
    local)
        rm -rf "$LOCAL_REPO"
        git init -q --bare "$LOCAL_REPO"
        t=$(timed_push local "file://$LOCAL_REPO" ok "$BENCH_TMP/local-$2.log" "${SSHD_RP[@]}")
        LOC_T+=("$t")
        note "local, no SSH (accepted):        $t s"
        rm -rf "$LOCAL_REPO"
        ;;
    esac
}

# Interleaved rounds; the order rotates from round to round so that no side always
# follows the same one.
SIDES=(gitd accepted refused local small)
for ((run = 1; run <= RUNS; run++)); do
    log "round $run/$RUNS"
    for ((k = 0; k < ${#SIDES[@]}; k++)); do
        run_side "${SIDES[$(((k + run - 1) % ${#SIDES[@]}))]}" "$run"
    done
done

GW_M=$(median "${GW_T[@]}")
ACC_M=$(median "${ACC_T[@]}")
REF_M=$(median "${REF_T[@]}")
LOC_M=$(median "${LOC_T[@]}")
GW_SM=$(median "${GW_S[@]}")
GW_CM=$(median "${GW_C[@]}")
ACC_CM=$(median "${ACC_C[@]}")
REF_CM=$(median "${REF_C[@]}")
ACC_SM=$(median "${ACC_S[@]}")
PACK_MIB=$(pushed_mib "$BENCH_TMP/gitd-1.log")

echo
echo "receive throughput, $(date -u +%Y-%m-%dT%H:%MZ); $(machine_summary)"
echo "history: $HIST_COMMITS commits, pack $HIST_PACK; pushed: $(pushed_summary "$BENCH_TMP/gitd-1.log"); $RUNS runs each, median"
echo "ciphers negotiated by the OpenSSH client: gitd ${GW_CIPHER:-?}, sshd ${SSHD_CIPHER:-?}"
echo
table "wall time of git push|runs (s)|median (s)|MiB/s|ratio gitd / side" \
    "gitd (refused by empire's hook)|${GW_T[*]}|$GW_M|$(calc1 "${PACK_MIB:-0} / $GW_M")|1.000" \
    "sshd (accepted)|${ACC_T[*]}|$ACC_M|$(calc1 "${PACK_MIB:-0} / $ACC_M")|$(calc "$GW_M / $ACC_M")" \
    "sshd (refused by a hook)|${REF_T[*]}|$REF_M|$(calc1 "${PACK_MIB:-0} / $REF_M")|$(calc "$GW_M / $REF_M")" \
    "local, no SSH (accepted)|${LOC_T[*]}|$LOC_M|$(calc1 "${PACK_MIB:-0} / $LOC_M")|$(calc "$GW_M / $LOC_M")"
echo
table "server-side CPU time (s): the server process and the children it reaped|runs|median|ratio gitd / side" \
    "gitd (refused by empire's hook)|${GW_C[*]}|$GW_CM|1.000" \
    "sshd (accepted)|${ACC_C[*]}|$ACC_CM|$(calc "$GW_CM / $ACC_CM")" \
    "sshd (refused by a hook)|${REF_C[*]}|$REF_CM|$(calc "$GW_CM / $REF_CM")"
echo
table "fixed cost: a 4-object push|runs (s)|median (s)" \
    "gitd (refused by empire's hook)|${GW_S[*]}|$GW_SM" \
    "sshd (accepted)|${ACC_S[*]}|$ACC_SM"
echo
echo "goal: gitd / sshd <= 1.10 -> wall time: $(calc "$GW_M / $ACC_M") (sshd accepting), $(calc "$GW_M / $REF_M") (sshd refusing);"
echo "      server CPU time: $(calc "$GW_CM / $ACC_CM") (sshd accepting), $(calc "$GW_CM / $REF_CM") (sshd refusing)"

#!/bin/sh
# Tests ansible/ for real (scripts/test.sh runs it; it also runs alone):
#
#   1. ansible-lint --offline (production profile) and ansible-playbook --syntax-check;
#   2. the empire_gateway role converges on a fresh Debian 12 container (systemd as
#      PID 1, built from Debian packages by ansible/tests/debian12/build.sh) twice, the
#      second run with changed=0; the gateway inside then answers /health and a
#      `git push` of tests/fixtures/web-httpd from this host deploys through it;
#   3. the empire_aws role converges against moto's server twice, the second run with
#      changed=0; then a gateway started on this host with the config empire_gateway
#      renders from those outputs (`scheduler = "ecs"`) takes a `git push` and the app's
#      ECS service, target group and Route53 record appear in moto (skipped while the
#      binary has no ECS flags).
#
#   scripts/ansible-test.sh [lint|gateway|aws]...      (default: all three)
#
# The container shares the host's Docker engine (its socket; the role's
# empire_gateway_docker_install is false, so no Docker runs inside Docker) and the
# host's network (the gateway reaches the app containers it starts on 127.0.0.1, as it
# does on a real host); the gateway listens on free loopback ports picked here. Ansible,
# ansible-lint and boto3 come from PyPI into a venv (EMPIRE_ANSIBLE_VENV, default
# /var/tmp/empire-ansible/venv); nothing is fetched from Galaxy. The Debian image is
# kept between runs and rebuilt only when missing or when its recipe changed.
# EMPIRE_BINARY names the binary to install (default: target/debug/empire, built here);
# EMPIRE_ANSIBLE_KEEP=1 keeps the container, moto and the logs for a look afterwards.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/lib.sh

STEPS=${*:-lint gateway aws}
VENV=${EMPIRE_ANSIBLE_VENV:-/var/tmp/empire-ansible/venv}
IMAGE=${EMPIRE_ANSIBLE_IMAGE:-empire/ansible-test-debian12:bookworm}
# What the venv holds; a change here reinstalls it.
PIP_PACKAGES="ansible>=11,<13 ansible-lint>=25 boto3 botocore"
SUFFIX=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/empire-ansible-test.XXXXXX")
CONTAINER=""
MOTO_PIDFILE=""
APP=""
PASSED=0
FAILED=0
SKIPPED=0
GATEWAY_PIDFILE=""
ECS_APP=""
UPGRADE_APP=""
SECOND_RUN_SECONDS=0

pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); log "skipped: $*"; }
fail() { FAILED=$((FAILED + 1)); printf ' !     FAILED: %s\n' "$*" >&2; }

cleanup() {
    if [ -n "${EMPIRE_ANSIBLE_KEEP:-}" ]; then
        log "Kept for a look (EMPIRE_ANSIBLE_KEEP): container $CONTAINER, logs in $WORK"
        return 0
    fi
    if [ -n "$CONTAINER" ]; then
        # The apps' containers run on the host's engine: destroy the apps through the
        # gateway, which removes them.
        for app in $APP $UPGRADE_APP; do
            if [ -s "$WORK/ssh_port" ]; then
                ssh_gateway destroy "$app" --confirm "$app" >/dev/null 2>&1 || true
            fi
        done
        docker rm -f -v "$CONTAINER" >/dev/null 2>&1 || true
        for app in $APP $UPGRADE_APP; do
            docker ps -aq --filter "label=empire.app=$app" | xargs -r docker rm -f >/dev/null 2>&1 || true
            docker images -q "empire/$app" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        done
    fi
    if [ -n "$GATEWAY_PIDFILE" ] && [ -s "$GATEWAY_PIDFILE" ]; then
        kill "$(cat "$GATEWAY_PIDFILE")" 2>/dev/null || true
    fi
    if [ -n "$ECS_APP" ]; then
        docker images -q "empire/$ECS_APP" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
    fi
    if [ -n "$MOTO_PIDFILE" ] && [ -s "$MOTO_PIDFILE" ]; then
        kill "$(cat "$MOTO_PIDFILE")" 2>/dev/null || true
        rm -rf "$(dirname "$MOTO_PIDFILE")"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# recap_changed LOG HOST prints the changed= count of HOST's line in the play recap, or
# nothing when the run failed or the host is missing.
recap_changed() {
    sed -n "s/^$2 *: ok=[0-9]* *changed=\([0-9]*\) *unreachable=0 *failed=0 .*/\1/p" "$1" | tail -n 1
}

# converge HOST LOG ARGS... runs the playbook and prints HOST's changed count; prints
# nothing when the run failed.
converge() {
    host=$1 out=$2
    shift 2
    (cd ansible && ansible-playbook -i inventories/test site.yml "$@") >"$out" 2>&1 || true
    recap_changed "$out" "$host"
}

# run_twice NAME HOST LOG-PREFIX ARGS... converges twice: the first run must succeed,
# the second must succeed with changed=0.
run_twice() {
    name=$1 host=$2 prefix=$3
    shift 3
    log "Converging $name (first run)"
    first=$(converge "$host" "$prefix-1.log" "$@")
    if [ -z "$first" ]; then
        fail "$name: the first run failed:"
        tail -n 40 "$prefix-1.log" >&2
        return 1
    fi
    pass "$name: the first run converged ($first changed)"
    log "Converging $name (second run)"
    t0=$(date +%s)
    second=$(converge "$host" "$prefix-2.log" "$@")
    SECOND_RUN_SECONDS=$(($(date +%s) - t0))
    if [ -z "$second" ]; then
        fail "$name: the second run failed:"
        tail -n 40 "$prefix-2.log" >&2
        return 1
    elif [ "$second" = 0 ]; then
        pass "$name: the second run changed nothing"
    else
        fail "$name: the second run reported changed=$second in:"
        grep -B2 '^changed:' "$prefix-2.log" | grep '^TASK' >&2 || true
    fi
}

# --- Set-up -------------------------------------------------------------------------------
ensure_packages git openssh-client ca-certificates mmdebstrap python3 curl
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    ensure_packages python3-venv
fi
if [ "$(cat "$VENV/.empire-packages" 2>/dev/null || true)" != "$PIP_PACKAGES" ]; then
    log "Installing Ansible, ansible-lint and boto3 from PyPI into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet $PIP_PACKAGES
    echo "$PIP_PACKAGES" >"$VENV/.empire-packages"
fi
PATH="$VENV/bin:$PATH"
export PATH ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
export ANSIBLE_CONFIG="$ROOT/ansible/ansible.cfg"

# --- 1. Lint and syntax -------------------------------------------------------------------
case " $STEPS " in *" lint "*)
    log "ansible-lint --offline --profile production"
    if (cd ansible && ansible-lint --offline --profile production -q) >"$WORK/lint.log" 2>&1; then
        pass "ansible-lint (production profile)"
    else
        cat "$WORK/lint.log" >&2
        fail "ansible-lint (production profile)"
    fi
    log "ansible-playbook --syntax-check"
    for inventory in test aws; do
        if (cd ansible && ansible-playbook --syntax-check -i "inventories/$inventory" site.yml) >"$WORK/syntax.log" 2>&1; then
            pass "syntax check with inventories/$inventory"
        else
            cat "$WORK/syntax.log" >&2
            fail "syntax check with inventories/$inventory"
        fi
    done
;; esac

# --- 2. empire_gateway on a fresh Debian 12 container ----------------------------------------
ssh_gateway() {
    ssh -i "$WORK/id_ed25519" -p "$(cat "$WORK/ssh_port")" -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes git@127.0.0.1 "$@"
}

gateway_test() {
    ensure_docker
    scripts/base-images.sh
    # The role looks the stack images up on the engine and builds only missing ones; the
    # container shares this host's engine, which already has them after this.
    scripts/stack-images.sh

    recipe=$(sha256sum ansible/tests/debian12/build.sh | cut -c1-16)
    have=$(docker image inspect -f '{{ index .Config.Labels "empire.ansible-test.recipe" }}' "$IMAGE" 2>/dev/null || true)
    if [ "$have" != "$recipe" ]; then
        log "Building the Debian 12 test host image $IMAGE"
        old_image=$(docker image inspect -f '{{ .Id }}' "$IMAGE" 2>/dev/null || true)
        if ! ansible/tests/debian12/build.sh "$IMAGE" >"$WORK/image.log" 2>&1; then
            cat "$WORK/image.log" >&2
            fail "building the Debian 12 test host image"
            return 1
        fi
        # The image of the previous recipe, untagged now.
        [ -z "$old_image" ] || docker rmi "$old_image" >/dev/null 2>&1 || true
    fi

    if [ -n "${EMPIRE_BINARY:-}" ]; then
        binary=$(realpath "$EMPIRE_BINARY")
    else
        ensure_rust
        log "Building the empire binary"
        cargo build --locked -p empire --bin empire
        binary=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/empire
    fi
    [ -x "$binary" ] || { fail "no binary at $binary"; return 1; }
    # A snapshot: a rebuild between the two runs must not count as a change.
    cp "$binary" "$WORK/empire"
    binary=$WORK/empire

    CONTAINER=empire-ansible-test-$SUFFIX
    log "Starting $CONTAINER (systemd as PID 1)"
    # systemd needs the cgroup tree writable: the host's tree in the host's cgroup
    # namespace, in which the container's systemd keeps to its own /docker/<id> subtree
    # (measured on cgroup v1; molecule runs systemd containers on cgroup v2 the same
    # way). Every capability but those the engine itself lacks (--privileged asks for
    # all and fails where the engine lacks one); no seccomp or AppArmor filter, so
    # systemd can set up the units' sandboxes.
    caps="--cap-add ALL"
    for cap in $(missing_caps); do caps="$caps --cap-drop $cap"; done
    # shellcheck disable=SC2086
    docker run -d --name "$CONTAINER" --hostname "$CONTAINER" $caps \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --security-opt systempaths=unconfined \
        --network host --cgroupns host --stop-signal SIGRTMIN+3 \
        --tmpfs /run --tmpfs /run/lock --tmpfs /tmp:exec \
        -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        -v /var/run/docker.sock:/var/run/docker.sock \
        --label empire.test=ansible \
        "$IMAGE" >/dev/null
    state=""
    for _ in $(seq 1 60); do
        state=$(docker exec "$CONTAINER" systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) break ;; esac
        sleep 1
    done
    case "$state" in
    running) ;;
    *) fail "systemd in $CONTAINER did not come up (state: $state)"
       docker exec "$CONTAINER" systemctl --failed --no-pager >&2 || true
       return 1 ;;
    esac

    free_port >"$WORK/ssh_port"
    http_port=$(free_port)
    echo "$http_port" >"$WORK/http_port"
    router_port=$(free_port)
    ssh-keygen -q -t ed25519 -N '' -C ansible-test -f "$WORK/id_ed25519"
    cat >"$WORK/vars.yml" <<VARS
empire_test_container: $CONTAINER
empire_gateway_binary_src: $binary
empire_gateway_ssh_listen: "127.0.0.1:$(cat "$WORK/ssh_port")"
empire_gateway_http_listen: "127.0.0.1:$http_port"
empire_gateway_router_listen: "127.0.0.1:$router_port"
empire_gateway_keys:
  - user: tester
    key: "$(cat "$WORK/id_ed25519.pub")"
VARS

    run_twice "empire_gateway on $CONTAINER" debian12 "$WORK/gateway" --limit debian12 -e "@$WORK/vars.yml" || return 1

    if [ "$(docker exec "$CONTAINER" systemctl is-active empire)" = active ] &&
        curl -fsS "http://127.0.0.1:$http_port/health" >/dev/null; then
        pass "the gateway runs under systemd and answers /health"
    else
        fail "the gateway does not answer http://127.0.0.1:$http_port/health"
        docker exec "$CONTAINER" journalctl -u empire --no-pager -n 40 >&2 || true
    fi

    APP=ansible-$SUFFIX
    repo=$WORK/app
    cp -R tests/fixtures/web-httpd "$repo"
    git -C "$repo" init -q -b main
    git -C "$repo" -c user.name=test -c user.email=test@example.com add -A
    git -C "$repo" -c user.name=test -c user.email=test@example.com commit -q -m "web-httpd"
    log "Pushing tests/fixtures/web-httpd to the gateway in $CONTAINER"
    if GIT_SSH_COMMAND="ssh -i $WORK/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes" \
        git -C "$repo" push "ssh://git@127.0.0.1:$(cat "$WORK/ssh_port")/$APP.git" main >"$WORK/push.log" 2>&1; then
        body=$(curl -fsS -H "Host: $APP.localhost" "http://127.0.0.1:$router_port/" 2>/dev/null || true)
        if [ "$body" = "web-httpd v1" ]; then
            pass "git push deployed $APP, served by the router"
            upgrade_test "$router_port" || true
        else
            fail "after the push the router answered: $body"
        fi
    else
        fail "git push was rejected:"
        cat "$WORK/push.log" >&2
        docker exec "$CONTAINER" journalctl -u empire --no-pager -n 40 >&2 || true
    fi
}

# upgrade_test: the README's upgrade — a new binary, the playbook run again — while a
# push is being built: the handler restarts the service, the gateway drains, and the
# push still deploys; the app deployed before keeps serving.
upgrade_test() {
    router_port=$1
    ssh_port=$(cat "$WORK/ssh_port")
    slow=$WORK/slow
    mkdir -p "$slow"
    # A build step that outlasts the playbook's way to its handler: twice what the
    # unchanged second run took, and at least 45 s.
    build_seconds=$((2 * SECOND_RUN_SECONDS + 20))
    [ "$build_seconds" -ge 45 ] || build_seconds=45
    cat >"$slow/Dockerfile" <<DOCKERFILE
FROM empire/busybox
COPY nonce /nonce
RUN S=started; D=done; echo slow-build-\$S && sleep $build_seconds && echo slow-build-\$D
COPY index.html /www/index.html
CMD ["/bin/sh", "-c", "exec httpd -f -p \$PORT -h /www"]
DOCKERFILE
    echo "upgrade v1" >"$slow/index.html"
    echo "$SUFFIX" >"$slow/nonce"
    git -C "$slow" init -q -b main
    git -C "$slow" -c user.name=test -c user.email=test@example.com add -A
    git -C "$slow" -c user.name=test -c user.email=test@example.com commit -q -m "slow"
    UPGRADE_APP=upgrade-$SUFFIX
    log "Pushing a slow build, then upgrading the binary while it builds"
    GIT_SSH_COMMAND="ssh -i $WORK/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes" \
        git -C "$slow" push "ssh://git@127.0.0.1:$ssh_port/$UPGRADE_APP.git" main >"$WORK/upgrade-push.log" 2>&1 &
    push_pid=$!
    started=""
    for _ in $(seq 1 120); do
        if grep -q slow-build-started "$WORK/upgrade-push.log"; then started=1; break; fi
        kill -0 "$push_pid" 2>/dev/null || break
        sleep 0.5
    done
    if [ -z "$started" ]; then
        fail "the slow push did not start building:"
        cat "$WORK/upgrade-push.log" >&2
        return 1
    fi
    # Any byte appended to an ELF file leaves it runnable: a "new" binary.
    cp "$WORK/empire" "$WORK/empire-next"
    printf 'upgrade %s\n' "$SUFFIX" >>"$WORK/empire-next"
    old_pid=$(docker exec "$CONTAINER" systemctl show -p MainPID --value empire)
    changed=$(converge debian12 "$WORK/gateway-upgrade.log" --limit debian12 -e "@$WORK/vars.yml" \
        -e "empire_gateway_binary_src=$WORK/empire-next")
    if wait "$push_pid"; then push_ok=1; else push_ok=""; fi
    new_pid=$(docker exec "$CONTAINER" systemctl show -p MainPID --value empire)
    if [ -z "$changed" ]; then
        fail "the upgrade run failed:"
        tail -n 40 "$WORK/gateway-upgrade.log" >&2
        return 1
    fi
    if [ "$old_pid" = "$new_pid" ] || ! grep -q 'RUNNING HANDLER \[empire_gateway : Restart Empire\]' "$WORK/gateway-upgrade.log"; then
        fail "the upgrade run did not restart the gateway (pid $old_pid, then $new_pid)"
        return 1
    fi
    if ! docker exec "$CONTAINER" journalctl -u empire --no-pager | grep -q 'waiting up to [0-9]*s for 1 running deploy'; then
        fail "the restart did not find the slow push running (the journal has no drain for 1 deploy)"
        docker exec "$CONTAINER" journalctl -u empire --no-pager -n 30 >&2 || true
        return 1
    fi
    if [ -n "$push_ok" ] && grep -q 'Released v1' "$WORK/upgrade-push.log" &&
        [ "$(curl -fsS -H "Host: $UPGRADE_APP.localhost" "http://127.0.0.1:$router_port/" 2>/dev/null)" = "upgrade v1" ]; then
        pass "upgrade: a new binary restarted the gateway mid-push (${build_seconds}s build, $changed changed); the push still deployed"
    else
        fail "upgrade: the push built during the restart did not deploy:"
        cat "$WORK/upgrade-push.log" >&2
        docker exec "$CONTAINER" journalctl -u empire --no-pager -n 30 >&2 || true
        return 1
    fi
    if [ "$(curl -fsS -H "Host: $APP.localhost" "http://127.0.0.1:$router_port/" 2>/dev/null)" = "web-httpd v1" ] &&
        curl -fsS "http://127.0.0.1:$(cat "$WORK/http_port")/health" >/dev/null; then
        pass "upgrade: the new gateway answers /health and still serves $APP"
    else
        fail "upgrade: after the restart $APP is not served or /health does not answer"
    fi
}

# missing_caps prints the capabilities the engine itself lacks (a privileged container
# would ask for them and fail to start).
missing_caps() {
    python3 - <<'PY'
import re
names = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
         "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
         "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
         "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
         "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
         "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
         "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
bnd = int(re.search(r"CapBnd:\s*([0-9a-f]+)", open("/proc/self/status").read()).group(1), 16)
print(" ".join(n for i, n in enumerate(names) if not bnd >> i & 1))
PY
}

case " $STEPS " in *" gateway "*)
    gateway_test || true
;; esac

# --- 3. empire_aws against moto ------------------------------------------------------------------
aws_test() {
    port=$(free_port)
    MOTO_PIDFILE=/var/tmp/empire-moto-$port/moto.pid
    # AWS-managed policies (AmazonECSTaskExecutionRolePolicy) exist in moto only on request.
    endpoint=$(MOTO_IAM_LOAD_MANAGED_POLICIES=true scripts/moto.sh "$port")
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
    cat >"$WORK/aws.yml" <<VARS
empire_aws_enabled: true
empire_aws_endpoint_url: $endpoint
empire_aws_name: empire-$SUFFIX
empire_aws_public_domain: apps-$SUFFIX.example.test
VARS
    run_twice "empire_aws against moto at $endpoint" localhost "$WORK/aws" --limit localhost -e "@$WORK/aws.yml" || return 1
    ecs_test "$endpoint"
}

# ecs_test ENDPOINT starts a gateway on this host with the config empire_gateway renders
# from empire_aws's outputs (scheduler ecs), pushes tests/fixtures/web-httpd and checks
# that the app's ECS service, target group and Route53 record exist in moto.
ecs_test() {
    endpoint=$1
    binary=${EMPIRE_BINARY:-}
    if [ -z "$binary" ]; then
        ensure_rust
        cargo build --locked -p empire --bin empire
        binary=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/empire
    fi
    binary=$(realpath "$binary")
    if ! "$binary" server --help 2>/dev/null | grep -q -- '--ecs-cluster'; then
        skip "the gateway with --scheduler ecs: $binary has no --ecs-cluster flag yet"
        return 0
    fi
    ensure_docker
    scripts/base-images.sh
    registry=$(scripts/registry.sh 5000)
    dir=$WORK/ecs
    mkdir -p "$dir/data"
    ssh_port=$(free_port)
    http_port=$(free_port)
    cat >"$dir/vars.yml" <<VARS
empire_test_config: $dir/empire.toml
empire_gateway_scheduler: ecs
empire_gateway_data_dir: $dir/data
empire_gateway_ssh_listen: "127.0.0.1:$ssh_port"
empire_gateway_http_listen: "127.0.0.1:$http_port"
empire_gateway_router_listen: "127.0.0.1:$(free_port)"
empire_gateway_apps_domain: empire.internal
empire_gateway_registry: "$registry"
empire_gateway_ecs_launch_type: FARGATE
empire_gateway_ecs_rollout_wait: false
empire_gateway_share_dir: $ROOT
VARS
    log "Rendering the gateway's config from empire_aws's outputs"
    if ! (cd ansible && ansible-playbook -i inventories/test tests/ecs-config.yml -e "@$WORK/aws.yml" -e "@$dir/vars.yml") >"$dir/render.log" 2>&1; then
        fail "rendering the ECS config:"
        tail -n 30 "$dir/render.log" >&2
        return 1
    fi
    log "Starting the gateway with --scheduler ecs against moto"
    AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1 \
        "$binary" server --config "$dir/empire.toml" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/server.pid"
    GATEWAY_PIDFILE=$dir/server.pid
    up=""
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$http_port/health" >/dev/null 2>&1; then up=1; break; fi
        kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break
        sleep 0.2
    done
    if [ -z "$up" ]; then
        fail "the gateway with the rendered ECS config did not start:"
        cat "$dir/empire.toml" >&2
        tail -n 30 "$dir/server.log" >&2
        return 1
    fi
    pass "the gateway starts with the rendered config and --scheduler ecs"
    [ -s "$WORK/id_ed25519.pub" ] || ssh-keygen -q -t ed25519 -N '' -C ansible-test -f "$WORK/id_ed25519"
    "$binary" --config "$dir/empire.toml" keys add tester "$WORK/id_ed25519.pub" >/dev/null
    ECS_APP=ecs-$SUFFIX
    repo=$dir/app
    cp -R tests/fixtures/web-httpd "$repo"
    git -C "$repo" init -q -b main
    git -C "$repo" -c user.name=test -c user.email=test@example.com add -A
    git -C "$repo" -c user.name=test -c user.email=test@example.com commit -q -m "web-httpd"
    log "Pushing tests/fixtures/web-httpd to the ECS gateway"
    if ! GIT_SSH_COMMAND="ssh -i $WORK/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes" \
        git -C "$repo" push "ssh://git@127.0.0.1:$ssh_port/$ECS_APP.git" main >"$dir/push.log" 2>&1; then
        fail "git push to the ECS gateway was rejected:"
        cat "$dir/push.log" >&2
        tail -n 20 "$dir/server.log" >&2
        return 1
    fi
    if python3_venv - "$endpoint" "$ECS_APP" "empire-$SUFFIX" <<'PY' >"$dir/check.log" 2>&1
import sys, boto3
endpoint, app, cluster = sys.argv[1:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1")
ecs = boto3.client("ecs", **kw)
services = ecs.describe_services(cluster=cluster, services=[f"{app}_web"])["services"]
assert services and services[0]["status"] == "ACTIVE", f"no ACTIVE service {app}_web in {cluster}: {services}"
print("service", services[0]["serviceName"], services[0]["taskDefinition"])
elb = boto3.client("elbv2", **kw)
groups = [g for g in elb.describe_target_groups()["TargetGroups"] if g["TargetGroupName"].startswith(app[:20])]
assert groups, f"no target group for {app}"
print("target group", groups[0]["TargetGroupName"])
r53 = boto3.client("route53", **kw)
zones = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "empire.internal." and z["Config"]["PrivateZone"]]
names = [r["Name"] for z in zones for r in r53.list_resource_record_sets(HostedZoneId=z["Id"])["ResourceRecordSets"]]
assert f"{app}.empire.internal." in names, f"no record {app}.empire.internal in {names}"
print("record", f"{app}.empire.internal.")
PY
    then
        pass "git push through the ECS gateway deployed $ECS_APP into moto ($(tr '\n' ';' <"$dir/check.log"))"
    else
        fail "after the push moto lacks the app's pieces:"
        cat "$dir/check.log" >&2
    fi
}

python3_venv() {
    "$VENV/bin/python3" "$@"
}

case " $STEPS " in *" aws "*)
    aws_test || true
;; esac

echo "ansible: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]

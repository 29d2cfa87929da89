# Shared set-up steps for scripts/start.sh and scripts/test.sh. Every step is
# idempotent: it checks first and installs or starts only what is missing.

log() { printf -- '-----> %s\n' "$*"; }

# ensure_packages PKG... installs the Debian packages that are not installed yet.
ensure_packages() {
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        log "Installing Debian packages:$missing"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

# ensure_docker starts dockerd when no Docker engine answers.
ensure_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if [ -n "${DOCKER_HOST:-}" ]; then
        echo "DOCKER_HOST=$DOCKER_HOST does not answer" >&2
        return 1
    fi
    log "Starting dockerd"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        $SUDO systemctl start docker || true
    fi
    if ! docker info >/dev/null 2>&1; then
        # Its own session, so the engine outlives the shell, job or test run that
        # started it (a process-group kill of that job would otherwise take it along).
        $SUDO setsid sh -c 'exec dockerd >>/var/log/empire-dockerd.log 2>&1' </dev/null >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "dockerd did not start; see /var/log/empire-dockerd.log" >&2
    return 1
}

# ensure_rust checks for cargo (the project builds with the machine's toolchain).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || {
        echo "cargo is not installed: install Rust 1.95 or newer (rustup or Debian's cargo)" >&2
        return 1
    }
}

# Packages the gateway needs at run time.
RUNTIME_PACKAGES="docker.io git ca-certificates busybox-static"
# Packages the tests and benchmarks need on top.
TEST_PACKAGES="openssh-client openssh-server gcc pkg-config"

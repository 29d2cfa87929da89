#!/bin/sh
# Runs every test: formatting and lints, unit tests, integration tests against the real
# Docker engine, and the end-to-end tests that drive the real binary with git and
# OpenSSH. Installs and starts what is missing first; safe to run again.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages $RUNTIME_PACKAGES $TEST_PACKAGES
ensure_docker
ensure_rust
scripts/base-images.sh
scripts/stack-images.sh
EMPIRE_TEST_DATABASE_URL=$(scripts/postgres.sh)
export EMPIRE_TEST_DATABASE_URL
EMPIRE_TEST_REGISTRY=$(scripts/registry.sh 5000)
EMPIRE_TEST_REGISTRY_BASIC=$(scripts/registry.sh 5001 --htpasswd empire:secret)
EMPIRE_TEST_AWS_ENDPOINT=$(scripts/moto.sh 5555)
export EMPIRE_TEST_REGISTRY EMPIRE_TEST_REGISTRY_BASIC EMPIRE_TEST_AWS_ENDPOINT
log "Free disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') (a cold test build takes about 4 GB)"
log "Checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
log "Building"
cargo build --locked --workspace --bins --examples
log "Testing ansible/ (lint, a Debian 12 host converged twice, AWS pieces against moto)"
EMPIRE_BINARY=${CARGO_TARGET_DIR:-target}/debug/empire scripts/ansible-test.sh
log "Running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-fail-fast "$@"
else
    cargo test --locked --workspace --no-fail-fast "$@"
fi

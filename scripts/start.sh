#!/bin/sh
# Starts the Empire gateway on its embedded defaults (SQLite in ./.empire, the local
# Docker engine, SSH git on :2222, HTTP on :8080, the router on :8000). Installs what is
# missing first; safe to run again. Extra arguments go to `empire server`.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages $RUNTIME_PACKAGES
ensure_docker
ensure_rust
scripts/base-images.sh
scripts/stack-images.sh
log "Building target/release/empire"
cargo build --release --locked -p empire
exec target/release/empire server "$@"

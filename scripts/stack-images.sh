#!/bin/sh
# Builds the buildpack stack images from Debian packages when they are missing
# (idempotent): empire/stack-build:bookworm (the runtimes and tools buildpacks compile
# with) and empire/stack-run:bookworm (what a slug needs to run). The recipe is in
# buildpacks/stack/.
#
#   scripts/stack-images.sh [MIRROR]     (default http://deb.debian.org/debian)
#
# STACK_BUILD_IMAGE / STACK_RUN_IMAGE override the image names.
set -eu
cd "$(dirname "$0")/.."
MIRROR=${1:-http://deb.debian.org/debian}
BUILD_IMAGE=${STACK_BUILD_IMAGE:-empire/stack-build:bookworm}
RUN_IMAGE=${STACK_RUN_IMAGE:-empire/stack-run:bookworm}

missing=""
docker image inspect "$BUILD_IMAGE" >/dev/null 2>&1 || missing="$missing build"
docker image inspect "$RUN_IMAGE" >/dev/null 2>&1 || missing="$missing run"
[ -n "$missing" ] || exit 0

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "-----> Installing mmdebstrap"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

for kind in $missing; do
    if [ "$kind" = build ]; then image=$BUILD_IMAGE; else image=$RUN_IMAGE; fi
    echo "-----> Building stack image $image from $MIRROR"
    buildpacks/stack/build.sh "$kind" "$image" "$MIRROR" bookworm
done

#!/bin/sh
# Builds one stack image from Debian packages: mmdebstrap writes a minimal root file
# system (the packages in <kind>.packages plus the non-root user `empire`, uid 1000)
# as a tarball, and `docker import` turns it into an image.
#
#   buildpacks/stack/build.sh build|run IMAGE [MIRROR] [SUITE]
#
# MIRROR defaults to http://deb.debian.org/debian and SUITE to bookworm.
set -eu
KIND=${1:?usage: build.sh build|run IMAGE [MIRROR] [SUITE]}
IMAGE=${2:?usage: build.sh build|run IMAGE [MIRROR] [SUITE]}
MIRROR=${3:-http://deb.debian.org/debian}
SUITE=${4:-bookworm}
HERE=$(cd "$(dirname "$0")" && pwd)
LIST="$HERE/$KIND.packages"
[ -f "$LIST" ] || { echo "no package list $LIST" >&2; exit 1; }
PACKAGES=$(grep -v '^[[:space:]]*#' "$LIST" | tr -s '[:space:]' ',' | sed 's/^,//; s/,$//')

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/empire-stack.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
TARBALL="$WORK/$KIND.tar"

# The user the buildpacks and the apps run as, and the directories the builder uses:
# /app (the source, then the slug), /cache (the app's cache volume), /empire (the
# buildpacks, the env dir and the launcher). Documentation and man pages are left out.
mmdebstrap \
    --variant=minbase \
    --mode=root \
    --format=tar \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --include="$PACKAGES" \
    --customize-hook='chroot "$1" groupadd --gid 1000 empire' \
    --customize-hook='chroot "$1" useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash empire' \
    --customize-hook='mkdir -p "$1/app" "$1/cache" "$1/empire" && chown 1000:1000 "$1/app" "$1/cache"' \
    --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"* "$1/var/log/"*.log' \
    "$SUITE" "$TARBALL" "$MIRROR"

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV HOME=/home/empire' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL empire.stack=$SUITE empire.stack.kind=$KIND" \
    --change 'USER empire' \
    --change 'WORKDIR /app' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$IMAGE" >/dev/null
echo "built $IMAGE"

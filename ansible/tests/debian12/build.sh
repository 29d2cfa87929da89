#!/bin/sh
# Builds the Debian 12 test host for the Ansible tests from Debian packages (no image
# can be pulled here): mmdebstrap writes a minimal bookworm root file system with
# systemd as init, Python for Ansible and sudo, as a tarball, and `docker import` turns
# it into an image that boots systemd as PID 1 in a privileged container.
#
#   ansible/tests/debian12/build.sh IMAGE [MIRROR]
#
# MIRROR defaults to http://deb.debian.org/debian. The image is labelled with a hash of
# this file, so scripts/ansible-test.sh rebuilds it only when it is missing or this
# recipe changed. Run it with `--privileged --stop-signal SIGRTMIN+3`.
set -eu
IMAGE=${1:?usage: build.sh IMAGE [MIRROR]}
MIRROR=${2:-http://deb.debian.org/debian}
RECIPE=$(sha256sum "$0" | cut -c1-16)

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/empire-ansible-host.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# What a fresh Debian 12 cloud host has: systemd, Python with apt bindings, sudo (no
# package lists, as in many cloud and container images: the role fetches them).
# Everything the role needs on top (git, PostgreSQL, ...) the role installs itself.
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,openssh-client,procps,iproute2,apt-utils,gnupg

# The container shares the host's network and kernel: units that would change kernel
# settings, mounts or consoles of the machine it runs on are masked, as molecule's
# systemd images do.
MASK="systemd-sysctl.service systemd-modules-load.service systemd-udevd.service \
systemd-udev-trigger.service systemd-remount-fs.service systemd-firstboot.service \
systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount \
dev-hugepages.mount getty.target console-getty.service getty@tty1.service \
systemd-logind.service systemd-timesyncd.service systemd-hwdb-update.service \
systemd-journald-audit.socket systemd-networkd.service systemd-resolved.service \
e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer fstrim.timer"

# The hooks' $1 is mmdebstrap's, not this script's:
# shellcheck disable=SC2016
mmdebstrap \
    --variant=minbase \
    --mode=root \
    --format=tar \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include="$PACKAGES" \
    --customize-hook="for unit in $MASK; do ln -sf /dev/null \"\$1/etc/systemd/system/\$unit\"; done" \
    --customize-hook='echo "deb http://deb.debian.org/debian bookworm main" > "$1/etc/apt/sources.list"; echo "deb http://deb.debian.org/debian-security bookworm-security main" >> "$1/etc/apt/sources.list"; echo "deb http://deb.debian.org/debian bookworm-updates main" >> "$1/etc/apt/sources.list"' \
    --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
    --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"* "$1/var/log/"*.log' \
    bookworm "$WORK/rootfs.tar" "$MIRROR"

docker import \
    --change 'ENV container=docker' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL empire.ansible-test.recipe=$RECIPE" \
    --change 'CMD ["/lib/systemd/systemd"]' \
    "$WORK/rootfs.tar" "$IMAGE" >/dev/null
echo "built $IMAGE"

#!/bin/sh
# Builds the local base images that examples and tests use (no image can be pulled
# here): `empire/busybox`, a FROM-scratch image with Debian's static busybox.
set -eu
if docker image inspect empire/busybox:latest >/dev/null 2>&1; then
    exit 0
fi
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "busybox-static is not installed" >&2; exit 1; }
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
cp "$BUSYBOX" "$CONTEXT/busybox"
cat > "$CONTEXT/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /etc && chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd
CMD ["/bin/sh"]
DOCKERFILE
docker build -q -t empire/busybox:latest "$CONTEXT" >/dev/null
echo "built empire/busybox:latest"

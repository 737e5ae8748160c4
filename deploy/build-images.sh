#!/usr/bin/env bash
# Builds relay's, NATS's and HAProxy's images with no registry at all: every
# binary comes from this host (Go toolchain, Debian packages) and every image
# is FROM scratch. deploy/compose-test.sh uses it; so can anyone without
# Docker Hub access (then: RELAY_IMAGE=... NATS_IMAGE=... HAPROXY_IMAGE=...
# docker compose -f docker-compose.yml -f deploy/compose.offline.yml up -d --no-build).
#
# Needs: go, docker, and Debian's haproxy and busybox-static packages.
# Environment:
#   RELAY_IMAGE    tag for relay           (default relay:local)
#   NATS_IMAGE     tag for NATS            (default relay-offline/nats:local)
#   HAPROXY_IMAGE  tag for HAProxy         (default relay-offline/haproxy:local)
#   RELAY_BIN      use this static relay binary instead of building ./cmd/relay
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELAY_IMAGE=${RELAY_IMAGE:-relay:local}
NATS_IMAGE=${NATS_IMAGE:-relay-offline/nats:local}
HAPROXY_IMAGE=${HAPROXY_IMAGE:-relay-offline/haproxy:local}
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
BUSYBOX_BIN=${BUSYBOX_BIN:-/bin/busybox}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { printf '%s build-images: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go not found"
command -v docker >/dev/null || die "docker not found"
[[ -x $HAPROXY_BIN ]] || die "$HAPROXY_BIN not found: apt-get install haproxy"
[[ -x $BUSYBOX_BIN ]] || die "$BUSYBOX_BIN not found: apt-get install busybox-static"
# A dynamically linked busybox (Debian's "busybox") would not run FROM scratch.
if ldd "$BUSYBOX_BIN" >/dev/null 2>&1; then
	die "$BUSYBOX_BIN is dynamically linked: apt-get install busybox-static"
fi
[[ -r $CA_BUNDLE ]] || die "$CA_BUNDLE not found: apt-get install ca-certificates"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# docker build with the legacy builder or BuildKit, quiet unless it fails.
build() {
	local out=$WORK/build.log
	if ! docker build "$@" >"$out" 2>&1; then
		cat "$out" >&2
		die "docker build $* failed"
	fi
}

cd "$ROOT"
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# relay: deploy/Dockerfile.prebuilt, from a static host build.
mkdir -p "$WORK/relay"
if [[ -n ${RELAY_BIN:-} ]]; then
	cp "$RELAY_BIN" "$WORK/relay/relay"
else
	log "go build ./cmd/relay"
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=$version -X main.commit=$revision" \
		-o "$WORK/relay/relay" ./cmd/relay
fi
cp "$CA_BUNDLE" "$WORK/relay/ca-certificates.crt"
log "docker build $RELAY_IMAGE (deploy/Dockerfile.prebuilt)"
build -f deploy/Dockerfile.prebuilt \
	--build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
	-t "$RELAY_IMAGE" "$WORK/relay"

# NATS: nats-server from the module version pinned in go.mod.
mkdir -p "$WORK/nats/data"
log "go build github.com/nats-io/nats-server/v2 ($(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2))"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$WORK/nats/nats-server" github.com/nats-io/nats-server/v2
cp "$BUSYBOX_BIN" "$WORK/nats/wget"
log "docker build $NATS_IMAGE (deploy/offline/nats.Dockerfile)"
build -f deploy/offline/nats.Dockerfile -t "$NATS_IMAGE" "$WORK/nats"

# HAProxy: Debian's binary with the shared libraries it links, FROM scratch.
rootfs=$WORK/haproxy/rootfs
mkdir -p "$rootfs/usr/local/sbin" "$rootfs/usr/bin" "$rootfs/usr/local/etc/haproxy" "$rootfs/tmp"
cp "$HAPROXY_BIN" "$rootfs/usr/local/sbin/haproxy"
cp "$BUSYBOX_BIN" "$rootfs/usr/bin/wget"
# ldd prints "name => /path (addr)" and "/lib64/ld-linux... (addr)".
while read -r lib; do
	mkdir -p "$rootfs$(dirname "$lib")"
	cp -L "$lib" "$rootfs$lib"
done < <(ldd "$HAPROXY_BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
chmod 1777 "$rootfs/tmp"
log "docker build $HAPROXY_IMAGE (deploy/offline/haproxy.Dockerfile, $("$HAPROXY_BIN" -v | head -1 | cut -d' ' -f1-3))"
build -f deploy/offline/haproxy.Dockerfile -t "$HAPROXY_IMAGE" "$WORK/haproxy"

log "built $RELAY_IMAGE $NATS_IMAGE $HAPROXY_IMAGE"

#!/usr/bin/env bash
# A Docker engine for machines that have only the Docker client and no reachable image registry.
#
#   tests/container/engine.sh start   # prints `export DOCKER_HOST=...`; use with eval "$(...)"
#   tests/container/engine.sh stop    # stops an engine this script started
#
# `start` does nothing when an engine already answers. Otherwise it installs Debian's engine,
# starts it with host networking only (no bridge, no iptables rules: containers share the host's
# network, so a served container listens on the host's loopback), and, when the base image
# debian:bookworm-slim is missing and cannot be pulled, builds it from the Debian archive with debootstrap. The host's
# CA bundle goes into that base so that pip inside a build trusts the same TLS roots as the host.
set -euo pipefail

STATE=${SEMSEG_ENGINE_DIR:-/var/tmp/docker}
SOCKET="unix://$STATE/docker.sock"
BASE_IMAGE=debian:bookworm-slim

answers() { timeout 10 docker info >/dev/null 2>&1; }

start() {
    if ! answers; then
        export DOCKER_HOST=$SOCKET
    fi
    if ! answers; then
        if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
            echo "Installing docker.io and debootstrap" >&2
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >&2
        fi
        mkdir -p "$STATE"
        echo "Starting dockerd (log: $STATE/log)" >&2
        setsid dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
            -H "$SOCKET" --bridge=none --iptables=false --ip-masq=false \
            </dev/null >"$STATE/log" 2>&1 &
        for _ in $(seq 60); do answers && break; sleep 1; done
        answers || { tail -20 "$STATE/log" >&2; echo "dockerd did not answer within 60 s" >&2; exit 1; }
    fi
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$BASE_IMAGE" >&2; then
        make_base_image
    fi
    echo "export DOCKER_HOST=${DOCKER_HOST:-}"
}

make_base_image() {
    local rootfs="$STATE/rootfs"
    echo "Building $BASE_IMAGE with debootstrap" >&2
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
        || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
    mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/local/share/ca-certificates/host-bundle.crt"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    slim "$rootfs"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >&2
    rm -rf "$rootfs"
}

# What makes Docker's official image "slim": dpkg leaves out documentation, manuals and translations,
# and apt keeps no package caches in image layers.
slim() {
    local rootfs=$1
    [[ -n $rootfs && -d $rootfs/etc/dpkg ]] || { echo "slim: $rootfs is not a root file system" >&2; exit 1; }
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
    local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"'
    printf '%s\n' "DPkg::Post-Invoke { $clean; };" "APT::Update::Post-Invoke { $clean; };" \
        'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
    find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf "$rootfs/usr/share/man" "$rootfs/usr/share/groff" "$rootfs/usr/share/info" "$rootfs/usr/share/lintian" \
        "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt/archives"
    mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/var/cache/apt/archives/partial"
}

stop() {
    local pidfile="$STATE/dockerd.pid"
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 30); do
            if ! kill -0 "$pid" 2>/dev/null; then
                # dockerd leaves its host network namespace mounted; unmount it so $STATE can be deleted
                umount "$STATE/exec/netns/default" 2>/dev/null || true
                return 0
            fi
            sleep 1
        done
        echo "dockerd ($pid) still running after 30 s" >&2
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

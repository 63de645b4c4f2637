#!/usr/bin/env bash
# Sets up what the tests need on a fresh Debian 12 machine: Debian packages, a running dockerd,
# and the edge/busybox:latest test image. Idempotent: run it as often as you like.
set -euo pipefail

log() { echo "[test-env] $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "[test-env] must run as root (it installs Debian packages and starts dockerd)" >&2
  exit 1
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The overlay tests enter containers' network namespaces; the overlay bench measures with iperf3 and ping.
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
# The AEAD cost bench links a small C program against libcrypto.
[ -e /usr/include/openssl/evp.h ] || need+=(libssl-dev)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
# The NAT test flushes its routers' connection tracking (their NAT mappings).
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
# The clock-jump test runs the node engine under libfaketime (its wall clock moved, its monotonic clock not).
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(libfaketime)
# The install test checks the systemd units start-up.sh writes with systemd-analyze verify (no systemd PID 1 needed).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The dashboard test drives Debian's Chromium with playwright-core (no browser download works here).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's mosquitto package starts a system broker on 1883 where systemd runs; tests start their own.

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  (setsid dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "[test-env] dockerd did not start; see /var/log/dockerd.log" >&2; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

if ! docker image inspect edge/busybox:latest >/dev/null 2>&1; then
  log "building edge/busybox:latest with docker import"
  bb=$(command -v busybox || echo /bin/busybox)
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc"
  cp "$bb" "$root/bin/busybox"
  for tool in sh sleep echo cat httpd nc wget ls ps kill top env true false ping ip ifconfig hostname yes; do
    ln -s busybox "$root/bin/$tool"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'hello from edge/busybox' >"$root/www/index.html"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - edge/busybox:latest >/dev/null
  rm -rf "$root"
fi
log "ready: $(docker version --format 'dockerd {{.Server.Version}}'), image edge/busybox:latest"

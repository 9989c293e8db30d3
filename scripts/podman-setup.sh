#!/usr/bin/env bash
# Prepares Podman for Rota's container tests, idempotently (safe to run again and again):
#
#   * installs podman, runc and busybox-static with apt-get when missing;
#   * writes /etc/containers/containers.conf (runtime runc, cgroupfs, file events logger, default ulimits low
#     enough for runc inside this kind of VM: higher ones fail with "error setting rlimits");
#   * starts `podman system service` on unix:///run/rota-podman.sock (Docker-compatible API) when that socket
#     does not answer;
#   * builds the local test image localhost/rota-test-busybox:latest (busybox-static only, no registry needed)
#     when it does not exist.
#
# Tests find the socket in ROTA_TEST_CONTAINER_SOCKET (default /run/rota-podman.sock): scripts/test.sh calls
#   bash scripts/podman-setup.sh; export ROTA_TEST_CONTAINER_SOCKET=/run/rota-podman.sock
# Any failure exits non-zero with a FATAL line naming what is missing.
set -euo pipefail

SOCKET=${ROTA_PODMAN_SOCKET:-/run/rota-podman.sock}
IMAGE=localhost/rota-test-busybox:latest
CONF=/etc/containers/containers.conf
LOG=${ROTA_PODMAN_LOG:-/tmp/rota-podman-service.log}

say() { printf 'podman-setup: %s\n' "$*" >&2; }
die() { printf 'FATAL: podman-setup: %s\n' "$*" >&2; exit 1; }

SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available)"
  SUDO=sudo
fi

# 1. packages
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[[ -x /bin/busybox && "$(ldd /bin/busybox 2>&1)" == *"not a dynamic"* ]] || missing+=(busybox-static) # static: runs in any rootfs
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
command -v podman >/dev/null 2>&1 || die "podman is not installed"
command -v runc >/dev/null 2>&1 || die "runc is not installed"

# 2. configuration (rewritten only when it differs, so a running service is not disturbed for nothing)
want_conf='# Written by rota scripts/podman-setup.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
if [ "$(cat "$CONF" 2>/dev/null)" != "$(printf '%s' "$want_conf")" ]; then
  say "writing $CONF"
  $SUDO mkdir -p /etc/containers
  printf '%s' "$want_conf" | $SUDO tee "$CONF" >/dev/null
  conf_changed=1
else
  conf_changed=0
fi

# 3. the API service
ping() { curl -sf --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }
if ((conf_changed)) && ping; then
  say "configuration changed: restarting the service on $SOCKET"
  pid=$(pgrep -f "podman system service --time=0 unix://$SOCKET" | head -1 || true)
  [ -n "$pid" ] && $SUDO kill "$pid" && sleep 1
fi
if ! ping; then
  say "starting podman system service on unix://$SOCKET (log: $LOG)"
  $SUDO rm -f "$SOCKET"
  $SUDO mkdir -p "$(dirname "$SOCKET")"
  $SUDO setsid nohup podman system service --time=0 "unix://$SOCKET" </dev/null >"$LOG" 2>&1 &
  for _ in $(seq 1 60); do
    ping && break
    sleep 0.5
  done
  ping || die "the podman API service does not answer on $SOCKET (see $LOG: $(tail -3 "$LOG" 2>/dev/null))"
fi

# 4. the test image
if ! $SUDO podman image exists "$IMAGE"; then
  say "building $IMAGE from busybox-static"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/etc" "$tmp/rootfs/proc" "$tmp/rootfs/sys" \
    "$tmp/rootfs/dev" "$tmp/rootfs/work"
  cp /bin/busybox "$tmp/rootfs/bin/busybox"
  for applet in sh echo sleep cat env false true ls printf head seq yes kill wc; do
    ln -s busybox "$tmp/rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/rootfs/etc/passwd"
  echo 'root:x:0:' >"$tmp/rootfs/etc/group"
  tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  $SUDO podman import -q --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' "$tmp/rootfs.tar" "$IMAGE" >/dev/null ||
    die "podman import of $IMAGE failed"
fi

# 5. smoke test through the Docker-compatible API (what the tests use)
curl -sf --max-time 10 --unix-socket "$SOCKET" "http://d/images/$IMAGE/json" >/dev/null ||
  die "image $IMAGE is not visible through the API on $SOCKET"
say "ready: ROTA_TEST_CONTAINER_SOCKET=$SOCKET image=$IMAGE"

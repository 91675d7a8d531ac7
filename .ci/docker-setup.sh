#!/usr/bin/env bash
# Make a Docker engine available for the image tests (CI and developer machines, as root).
#
# Installs Debian's docker.io and debootstrap when missing, starts dockerd in the background
# when no daemon answers, and waits (up to 60 s) until `docker info` works. Idempotent.
# Exits 1, saying why, when the engine cannot be made to answer: CI expects Docker (the image
# tests must run, not skip). On a machine where Docker is not expected (a developer's laptop
# without it, a container without privileges), DOCKER_SETUP_OPTIONAL=1 makes it exit 0 instead;
# the image tests then skip with the reason (tests/deploy/containers.py probes the engine).
set -uo pipefail

LOG_DIR=${DOCKER_SETUP_LOG_DIR:-/tmp/bookstream-dockerd}
mkdir -p "$LOG_DIR"
fail() {
  echo "docker-setup: $*" >&2
  [ "${DOCKER_SETUP_OPTIONAL:-0}" = 1 ] && exit 0
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  docker info >/dev/null 2>&1 && { echo "docker-setup: engine answers"; exit 0; }
  fail "not root: cannot install or start dockerd"
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "docker-setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$LOG_DIR/apt.log" 2>&1 || { tail -n 20 "$LOG_DIR/apt.log" >&2; fail "apt-get install ${missing[*]} failed"; }
fi

if docker info >/dev/null 2>&1; then
  echo "docker-setup: engine answers ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

echo "docker-setup: starting dockerd (log: $LOG_DIR/dockerd.log)"
# setsid + nohup: the daemon outlives this script and the shell that ran it.
setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
echo $! >"$LOG_DIR/dockerd.pid"
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker-setup: engine answers ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  if ! kill -0 "$(cat "$LOG_DIR/dockerd.pid")" 2>/dev/null; then
    tail -n 20 "$LOG_DIR/dockerd.log" >&2
    fail "dockerd exited at start (see above)"
  fi
  sleep 1
done
tail -n 20 "$LOG_DIR/dockerd.log" >&2
fail "dockerd did not answer within 60 s"

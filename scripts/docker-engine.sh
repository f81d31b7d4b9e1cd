#!/usr/bin/env bash
# Make sure a Docker engine answers and the stand-in Lambda image exists, on a Debian machine
# where we are root: installs docker.io and debootstrap when missing, starts dockerd in the
# background when no engine answers, then builds the stand-in image (tests/images/).
#
#   scripts/docker-engine.sh            engine + stand-in image for x86_64
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine." >&2
    exit 1
  fi
  echo "Starting dockerd ..." >&2
  log=${TMPDIR:-/tmp}/poetry-lambda-zip-dockerd.log
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi

tests/images/build-stand-in.sh x86_64 >/dev/null

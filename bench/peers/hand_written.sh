#!/usr/bin/env bash
# Peer: the usual hand-written script (poetry export + docker run pip --target + zip -r).
# Usage: hand_written.sh PROJECT_DIR  -> prints zip path
set -euo pipefail
. "$(dirname "$0")/common.sh"
SRC=$(realpath "$1"); NAME=$(basename "$SRC"); mkdir -p "$OUT"
B=$WORK/build/hand_written/$NAME; rm -rf "$B"; mkdir -p "$B/pkg"
"$VENV/bin/poetry" -C "$SRC" export -f requirements.txt --only main -o "$B/requirements.txt"   # with hashes
docker run --rm -v "$SRC":/var/task/project:ro -v "$B":/build -v "$CA_BUNDLE":/etc/pip-ca.crt:ro \
  -e PIP_CERT=/etc/pip-ca.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 ${INDEX_URL:+-e PIP_INDEX_URL="$INDEX_URL"} \
  -e PIP_ROOT_USER_ACTION=ignore "$IMG" bash -ec '
    pip install -q --no-cache-dir --require-hashes -r /build/requirements.txt --target /build/pkg
    pip install -q --no-cache-dir --no-deps /var/task/project --target /build/pkg'
ZIP="$OUT/hand_written-$NAME.zip"; rm -f "$ZIP"
(cd "$B/pkg" && zip -qr -X "$ZIP" . -x '*__pycache__*' '*.pyc')
echo "$ZIP"

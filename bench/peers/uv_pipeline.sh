#!/usr/bin/env bash
# Peer: poetry export + uv pip install --target (cross-platform, no Docker) + zip -r.
# Usage: uv_pipeline.sh PROJECT_DIR  -> prints zip path.  UV_CACHE_DIR controls cold/warm.
set -euo pipefail
. "$(dirname "$0")/common.sh"
SRC=$(realpath "$1"); NAME=$(basename "$SRC"); mkdir -p "$OUT"
B=$WORK/build/uv/$NAME; rm -rf "$B"; mkdir -p "$B/pkg"
export SSL_CERT_FILE="$CA_BUNDLE"                # uv (rustls) trusts this bundle; UV_NATIVE_TLS=1 also works
[ -n "$INDEX_URL" ] && export UV_DEFAULT_INDEX="$INDEX_URL"
export UV_CACHE_DIR=${UV_CACHE_DIR:-$WORK/uv-cache}
UV=$VENV/bin/uv; PLAT=(--python-platform x86_64-manylinux_2_17 --python-version 3.11)
"$VENV/bin/poetry" -C "$SRC" export -f requirements.txt --only main -o "$B/requirements.txt"
"$UV" pip install -q --no-config --target "$B/pkg" "${PLAT[@]}" --require-hashes -r "$B/requirements.txt"
"$UV" pip install -q --no-config --target "$B/pkg" "${PLAT[@]}" --no-deps "$SRC"
ZIP="$OUT/uv-$NAME.zip"; rm -f "$ZIP"
(cd "$B/pkg" && zip -qr -X "$ZIP" . -x '*__pycache__*' '*.pyc' .lock)   # uv --target leaves a .lock file
echo "$ZIP"

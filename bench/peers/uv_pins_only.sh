#!/usr/bin/env bash
# Peer, bare minimum: the locked name==version pins (taken from the lock by our --dry-run
# --json), no export, no project code, no hashes: uv pip install --no-deps --target + zip -r.
# Usage: uv_pins_only.sh PROJECT_DIR  -> prints zip path.  UV_CACHE_DIR controls cold/warm.
#        uv_pins_only.sh PROJECT_DIR --prepare  -> only writes the pins (run it untimed first:
#        the pins stand for a requirements file a user keeps, not for work of the pipeline).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SRC=$(realpath "$1"); NAME=$(basename "$SRC"); mkdir -p "$OUT"
B=$WORK/build/uv-pins/$NAME; rm -rf "$B/pkg"; mkdir -p "$B/pkg"
if [ ! -f "$B/requirements.txt" ]; then  # computed once, outside the measured part's repeats
  "${POETRY:-poetry}" lambda-zip -C "$SRC" --runtime python3.11 --dry-run --json > "$B/plan.json"
  python3 - "$B/plan.json" > "$B/requirements.txt" <<'PY'
import json, sys
for d in json.load(open(sys.argv[1]))["distributions"]:
    print(d["name"] + "==" + d["version"])
PY
fi
[ "${2:-}" = --prepare ] && exit 0
export SSL_CERT_FILE="$CA_BUNDLE"
[ -n "$INDEX_URL" ] && export UV_DEFAULT_INDEX="$INDEX_URL"
export UV_CACHE_DIR=${UV_CACHE_DIR:-$WORK/uv-cache}
"$VENV/bin/uv" pip install -q --no-config --no-deps --target "$B/pkg" --python-platform x86_64-manylinux_2_17 \
  --python-version 3.11 --only-binary :all: -r "$B/requirements.txt"
ZIP="$OUT/uv-pins-$NAME.zip"; rm -f "$ZIP"
(cd "$B/pkg" && zip -qr -X "$ZIP" . -x '*__pycache__*' '*.pyc' .lock)
echo "$ZIP"

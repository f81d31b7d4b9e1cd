#!/usr/bin/env bash
# Peer: poetry-plugin-lambda-build in Docker mode. Usage: lambda_build.sh PROJECT_DIR  -> prints zip path
set -euo pipefail
. "$(dirname "$0")/common.sh"
SRC=$(realpath "$1"); mkdir -p "$OUT"
# The plugin tars os.getcwd() into the container and only reads docker-* keys from pyproject
# (CLI key=value tokens can't contain '='), so stage a copy with the config + CA bundle added.
STAGE=$WORK/stage/lambda_build/$(basename "$SRC"); rm -rf "$STAGE"; mkdir -p "$STAGE"
tar -C "$SRC" --exclude=.venv --exclude=dist --exclude=.git -cf - . | tar -C "$STAGE" -xf -
cp "$CA_BUNDLE" "$STAGE/.lambda-ca.crt"
ENVS="PIP_CERT=/opt/lambda/work/.lambda-ca.crt,REQUESTS_CA_BUNDLE=/opt/lambda/work/.lambda-ca.crt,SSL_CERT_FILE=/opt/lambda/work/.lambda-ca.crt,PIP_DISABLE_PIP_VERSION_CHECK=1"
[ -n "$INDEX_URL" ] && ENVS="$ENVS,PIP_INDEX_URL=$INDEX_URL"
cat >> "$STAGE/pyproject.toml" <<TOML

[tool.poetry-plugin-lambda-build]
docker-image = "$IMG"
docker-environment = "$ENVS"
package-artifact-path = "dist/lambda.zip"
zip-compression = "ZIP_DEFLATED"
TOML
cd "$STAGE"
"$VENV/bin/poetry" build-lambda --no-checksum ${LB_VERBOSE:+-vv} >&2
cp dist/lambda.zip "$OUT/lambda_build-$(basename "$SRC").zip"
echo "$OUT/lambda_build-$(basename "$SRC").zip"

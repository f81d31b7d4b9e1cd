# Shared settings of the peer scripts (sourced). PEERS_VENV: a venv with poetry,
# poetry-plugin-export, poetry-plugin-lambda-build and uv (bench/compare.py says how to make it).
VENV=${PEERS_VENV:?set PEERS_VENV to the venv holding the peer tools}
WORK=${PEERS_WORK:-${TMPDIR:-/tmp}/lambda-zip-peers}
OUT=${OUT_DIR:-$WORK/out}
IMG=${LAMBDA_IMAGE:-poetry-lambda-zip/stand-in:python3.11-x86_64}
CA_BUNDLE=${CA_BUNDLE:-$(python3 -c 'import ssl;print(ssl.get_default_verify_paths().cafile or "")')}
# Index: pip's configured index-url if any, else PIP_INDEX_URL, else pip's default index.
INDEX_URL=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}

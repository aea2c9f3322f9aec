#!/usr/bin/env bash
# Installs the official WestWallet client libraries the tests drive: Python
# `westwallet-api` in a virtualenv (it pins an old `requests`) and the JavaScript
# `westwallet-api` with `axios` beside it (it does not declare it). Idempotent; prints
# the directory (tests read it from KASSATEST_CLIENTS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${KASSATEST_CLIENTS_DIR:-$PWD/target/clients}
PY_CLIENT=westwallet-api==1.1.9
JS_CLIENT=westwallet-api@1.0.7
AXIOS=axios@1.13.2
mkdir -p "$dir"
if [ ! -x "$dir/py/bin/python" ] || ! "$dir/py/bin/python" -c 'import westwallet_api' 2>/dev/null; then
  python3 -m venv "$dir/py" >&2
  "$dir/py/bin/pip" install --quiet --disable-pip-version-check "$PY_CLIENT" >&2
fi
if [ ! -f "$dir/js/node_modules/westwallet-api/package.json" ] || [ ! -f "$dir/js/node_modules/axios/package.json" ]; then
  mkdir -p "$dir/js"
  [ -f "$dir/js/package.json" ] || echo '{"name": "kassa-client-tests", "private": true}' > "$dir/js/package.json"
  (cd "$dir/js" && npm install --silent --no-audit --no-fund "$JS_CLIENT" "$AXIOS" >&2)
fi
echo "$dir"

#!/usr/bin/env bash
# Runs Kassa's whole test suite: starts (or reuses) a throwaway PostgreSQL on
# 127.0.0.1, then every test, each database test on SQLite and on PostgreSQL.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p kassa --test ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_POSTGRES_URL=$(scripts/postgres.sh start)
export TEST_POSTGRES_URL
echo "PostgreSQL for tests: $TEST_POSTGRES_URL"
# The official API client libraries the compatibility tests drive.
KASSATEST_CLIENTS_DIR=$(scripts/clients.sh)
export KASSATEST_CLIENTS_DIR
echo "API client libraries for tests: $KASSATEST_CLIENTS_DIR"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit $status

#!/usr/bin/env bash
# Runs Kassa's whole test suite: starts (or reuses) a throwaway PostgreSQL on
# 127.0.0.1, then every test, each database test on SQLite and on PostgreSQL.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p kassa --test ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_POSTGRES_URL=$(scripts/postgres.sh start)
export TEST_POSTGRES_URL
echo "PostgreSQL for tests: $TEST_POSTGRES_URL"
cargo test --workspace --locked "$@"

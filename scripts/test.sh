#!/usr/bin/env bash
# README command 2 (and .ci/run): set up the test bed, then format check, clippy and every
# test, unit and integration, against real Asterisk, SIPp and PostgreSQL. Run as root.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
started=$(date +%s)

scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
scripts/pytools.sh >/dev/null   # Schemathesis and openapi-python-client for tests/openapi.rs

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/obzvon-test.log"
status=${PIPESTATUS[0]}
echo "== done in $(($(date +%s) - started)) s"
exit "$status"

#!/usr/bin/env bash
# README command 1: set up the test bed and run the demo through real Asterisk. SIPp plays the
# operator's phone (op1) and the customers behind the trunk; progress is printed as it happens
# and a per-result report ends it. Run as root on a fresh Debian machine; idempotent.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"

echo "== building obzvon"
cargo build --quiet --bin obzvon
BIN=target/debug/obzvon
$BIN migrate

LOG_DIR=${OBZVON_TESTBED_DIR:-/var/lib/obzvon-testbed}/log
mkdir -p "$LOG_DIR"
keys=$(mktemp)
printf 'SEQUENTIAL\n-;0;-;0;0\n' >"$keys"
pkill -f 'sipp .*-p 5071 ' 2>/dev/null || true
(cd "$LOG_DIR" && exec sipp -sf "$REPO/scripts/sipp/operator-phone.xml" -inf "$keys" -i 127.0.0.1 -p 5071 \
	-mi 127.0.0.1 -mp 16110 -nostdin -trace_err >"$LOG_DIR/demo-operator.out" 2>&1) &
phone=$!
trap 'kill $phone 2>/dev/null || true; rm -f "$keys"' EXIT
sleep 0.3

echo "== demo calls"
$BIN demo --operator PJSIP/op1

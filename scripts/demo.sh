#!/usr/bin/env bash
# README command 1: set up the test bed and run a real demo campaign through Asterisk 22.
# obzvon serve runs in the background; two SIPp operator phones log in with *55 and press
# disposition keys in wrap-up; the SIPp trunk plays 30 customers with mixed behaviours. Live
# progress, then a report per result. Run as root on a fresh Debian machine; idempotent.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
LOG_DIR=${OBZVON_TESTBED_DIR:-/var/lib/obzvon-testbed}/log
mkdir -p "$LOG_DIR"

echo "== building obzvon"
cargo build --quiet --bin obzvon
BIN=$REPO/target/debug/obzvon
$BIN migrate

export OBZVON_HTTP__LISTEN=${OBZVON_HTTP__LISTEN:-127.0.0.1:8080}
export OBZVON_INSTANCE__ID=demo
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
export OBZVON_ENGINE__JOURNAL_DIR=${OBZVON_ENGINE__JOURNAL_DIR:-$LOG_DIR/journal}
# The demo needs the API address and the phones' SIP ports to itself. It never stops what it
# did not start (a production obzvon may run on this box): it says what is in the way.
port_busy() { # proto port
	ss -Hln"$1" "sport = :$2" 2>/dev/null | grep -q .
}
if port_busy t "${OBZVON_HTTP__LISTEN##*:}"; then
	echo "demo: something already listens on $OBZVON_HTTP__LISTEN (another obzvon?). Stop it or set OBZVON_HTTP__LISTEN." >&2
	exit 1
fi
for n in 1 2; do
	if port_busy u "507$n"; then
		echo "demo: UDP port 507$n (operator phone op$n) is in use. Stop what uses it and run the demo again." >&2
		exit 1
	fi
done

$BIN serve >"$LOG_DIR/demo-serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
	curl -fsS "http://$OBZVON_HTTP__LISTEN/readyz" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fsS "http://$OBZVON_HTTP__LISTEN/readyz" >/dev/null || { tail -20 "$LOG_DIR/demo-serve.log"; exit 1; }

# The demo drives obzvon over REST like a CRM would: with an API token (admin scope). It
# registers the operators first; their phones dial *55 once obzvon knows them (a login from an
# endpoint that is nobody's is refused).
$BIN token revoke demo >/dev/null 2>&1 || true
OBZVON_TOKEN=$($BIN token create --name demo --scope admin)
export OBZVON_TOKEN
$BIN demo --api "http://$OBZVON_HTTP__LISTEN" --operators PJSIP/op1,PJSIP/op2 --leads "${DEMO_LEADS:-30}" &
demo=$!
pids+=($demo)
for _ in $(seq 1 100); do
	known=$(curl -fsS -H "Authorization: Bearer $OBZVON_TOKEN" "http://$OBZVON_HTTP__LISTEN/api/v1/operators" 2>/dev/null |
		grep -o '"PJSIP/op[12]"' | sort -u | wc -l || true)
	[ "$known" -ge 2 ] && break
	sleep 0.1
done

# Operator phones: op1 presses 1 (success) in wrap-up, op2 presses 2 (not interested). They
# stream audio (scripts/sipp/operator-audio.ul), as live phones do.
cp "$REPO/scripts/sipp/operator-audio.ul" "$LOG_DIR/"
for n in 1 2; do
	(cd "$LOG_DIR" && exec sipp -sf "$REPO/scripts/sipp/operator-login.xml" -s '*55' -key op "op$n" -key key "$n" \
		-d 800 127.0.0.1:5060 -i 127.0.0.1 -p "507$n" -mi 127.0.0.1 -mp "163${n}0" -m 1 -nostdin -trace_err \
		>"$LOG_DIR/demo-op$n.out" 2>&1) &
	pids+=($!)
done
wait "$demo"
echo "obzvon's log: $LOG_DIR/demo-serve.log"

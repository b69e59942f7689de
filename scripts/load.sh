#!/usr/bin/env bash
# The load harness: N SIPp operators (the test bed's generated endpoints op7..op200, logged in
# with *55 by SIPp processes of 25 phones), a campaign whose far ends answer, talk, are busy or ring out
# as the SIPp trunk is told by each number, run for a set time; then one table: calls placed,
# calls/s, peak concurrent calls, connect latency, obzvon's CPU per 1,000 attempts and its
# share of the box beside Asterisk's, obzvon's memory, PostgreSQL transactions, rows and WAL
# per attempt, outbox lag, scheduler tick. obzvon runs as its own process (release build).
#
#   scripts/load.sh                              50 operators for 120 s, predictive pacing
#   scripts/load.sh --operators 200 --secs 300
#   scripts/load.sh --talk-mean 10 --live 0.5    shorter calls, more answers: more calls/s
#   scripts/load.sh --pacing progressive --cps 100 --max-calls 1000
#
# Run as root (it starts the test bed). Nothing else should run meanwhile: the CPU figures
# are the box's.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
while [ $# -gt 0 ]; do
	case "$1" in
	--operators) export LOAD_OPERATORS=$2; shift 2 ;;
	--secs) export LOAD_SECS=$2; shift 2 ;;
	--live) export LOAD_LIVE=$2; shift 2 ;;
	--talk-mean) export LOAD_TALK_MEAN_SECS=$2; shift 2 ;;
	--wrap) export LOAD_WRAP_SECS=$2; shift 2 ;;
	--pacing) export LOAD_PACING=$2; shift 2 ;;
	--cps) export LOAD_CPS=$2; shift 2 ;;
	--max-calls) export LOAD_MAX_CALLS=$2; shift 2 ;;
	--leads) export LOAD_LEADS=$2; shift 2 ;;
	--seed) export LOAD_SEED=$2; shift 2 ;;
	-h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "load.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
exec cargo test --release --test load load_run -- --ignored --nocapture --test-threads 1

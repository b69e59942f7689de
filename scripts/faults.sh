#!/usr/bin/env bash
# The fault suite's long form: rounds of a 200-lead campaign with six SIPp operators through
# every fault (kill -9 and restart, SIGTERM and restart, an Asterisk restart, a PostgreSQL
# outage, a RabbitMQ outage, an operator phone killed without BYE; ARI events duplicated and
# reordered all along), each round in a random order at random moments. After each round it
# checks the database, the far end's SIP log and RabbitMQ, and prints one table line; the last
# line sums all rounds:
#   faults: rounds=N leads_lost=0 double_dials=0 stuck=0 cut=0 events_lost=0 dead_bridged=0
#
#   scripts/faults.sh                 50 rounds (about 100 s each)
#   scripts/faults.sh --rounds 5      fewer
#   scripts/faults.sh --leads 400     bigger campaigns
#
# The short form (one round) is part of the test suite (tests/faults.rs). The suite takes the
# test bed for itself: it restarts Asterisk and stops RabbitMQ's application. Run as root.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
rounds=50
leads=200
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--leads) leads=$2; shift 2 ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
export FAULT_ROUNDS=$rounds FAULT_LEADS=$leads
exec cargo test --release --test faults the_fault_suite_long_form -- --ignored --nocapture --test-threads 1

#!/usr/bin/env bash
# The Python tools the API contract tests use, in a venv under target/py (never system-wide):
# Schemathesis (fuzzes the live server against /api/v1/openapi.json) and openapi-python-client
# (generates a client from `obzvon openapi`). Idempotent: a second run only checks versions.
#   scripts/pytools.sh          install what is missing; prints the venv's bin directory
# Versions are pinned so a new release cannot change what the suite checks.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OBZVON_PY_VENV:-$REPO/target/py/venv}
PINS=(schemathesis==4.32.5 openapi-python-client==0.29.1)

say() { printf '[pytools %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[pytools] error: %s\n' "$*" >&2; exit 1; }

# Debian's own interpreter: a pyenv or conda shim on PATH is not what a fresh machine has.
PY=/usr/bin/python3
if [ ! -x "$PY" ] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] || die "python3 with venv is missing; run as root to install it"
	say "installing python3-venv"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi

stamp="$VENV/.obzvon-pins"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PINS[*]}" ] && [ -x "$VENV/bin/schemathesis" ] \
	&& [ -x "$VENV/bin/openapi-python-client" ]; then
	echo "$VENV/bin"
	exit 0
fi
started=$(date +%s)
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
say "installing ${PINS[*]}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
echo "${PINS[*]}" >"$stamp"
say "ready in $(($(date +%s) - started)) s"
echo "$VENV/bin"

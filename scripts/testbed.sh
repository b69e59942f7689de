#!/usr/bin/env bash
# The obzvon test bed: PostgreSQL, RabbitMQ, SIPp and Asterisk 22 in a Debian chroot.
#
#   scripts/testbed.sh up                 install what is missing, start everything, wait for ARI
#   scripts/testbed.sh down               stop Asterisk and the SIPp trunk (databases stay up)
#   scripts/testbed.sh asterisk start|stop|restart|status
#   scripts/testbed.sh cli 'core show channels'
#   scripts/testbed.sh trunk start|stop   the SIPp far end of the outbound trunk (127.0.0.1:5070)
#   scripts/testbed.sh box2 start|stop|kill|status   a second Asterisk from the same chroot (ARI on
#                                         127.0.0.1:8089, SIP on 5160), for the two-box test
#   scripts/testbed.sh browser            install headless Chromium and chromedriver (also part of up)
#   scripts/testbed.sh env                print the environment the tests and the demo use
#
# Idempotent: a second `up` on a ready machine takes a few seconds. Everything it builds lives in
# $OBZVON_TESTBED_DIR (default /var/lib/obzvon-testbed), outside the repo, so a fresh clone reuses
# the cached Asterisk chroot. Needs root (apt-get, chroot).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTBED_DIR=${OBZVON_TESTBED_DIR:-/var/lib/obzvon-testbed}
ROOTFS=$TESTBED_DIR/asterisk-root
LOG_DIR=$TESTBED_DIR/log
# Debian packages the chroot must hold. Sounds are needed for the abandon message.
CHROOT_PACKAGES=(asterisk asterisk-core-sounds-en-gsm)
ARI_URL=${OBZVON_ARI_URL:-http://127.0.0.1:8088/ari}
ARI_USER=${OBZVON_ARI_USER:-obzvon}
ARI_PASSWORD=${OBZVON_ARI_PASSWORD:-obzvon}
DB_NAME=${OBZVON_DB_NAME:-obzvon}
DB_USER=${OBZVON_DB_USER:-obzvon}
DB_PASSWORD=${OBZVON_DB_PASSWORD:-obzvon}
TRUNK_PORT=5070

say() { printf '[testbed %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages and runs chroot)"
}

APT_UPDATED=0
apt_install() {
	local missing=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ $APT_UPDATED -eq 0 ]; then
		say "apt-get update"
		apt-get update -qq >/dev/null
		APT_UPDATED=1
	fi
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror this machine already uses (deb822 .sources first, then sources.list).
debian_mirror() {
	if [ -n "${OBZVON_DEBIAN_MIRROR:-}" ]; then
		echo "$OBZVON_DEBIAN_MIRROR"
		return
	fi
	local uri
	uri=$(awk '
		/^URIs:/ { uris = $2 }
		/^Suites:/ { if ($0 !~ /-security/ && uris != "") { print uris; exit } }
		/^$/ { uris = "" }
	' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $3 !~ /-security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list*; set OBZVON_DEBIAN_MIRROR"
	echo "${uri%/}"
}

# ---- PostgreSQL ---------------------------------------------------------------------------

postgres_up() {
	if ! command -v pg_lsclusters >/dev/null 2>&1; then
		apt_install postgresql
	fi
	local cluster version name status
	cluster=$(pg_lsclusters --no-header | head -n1)
	if [ -z "$cluster" ]; then
		version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
		say "creating PostgreSQL $version cluster"
		pg_createcluster "$version" main >/dev/null
		cluster=$(pg_lsclusters --no-header | head -n1)
	fi
	read -r version name _ status _ <<<"$cluster"
	if [ "$status" != "online" ]; then
		say "starting PostgreSQL $version/$name"
		pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
	fi
	for _ in $(seq 1 50); do
		runuser -u postgres -- psql -qAtc 'select 1' >/dev/null 2>&1 && break
		sleep 0.2
	done
	# A role with a password works under both trust and scram host authentication.
	runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt >/dev/null <<-SQL
		DO \$\$ BEGIN
		  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
		    CREATE ROLE "$DB_USER" LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
		  END IF;
		END \$\$;
	SQL
	if ! runuser -u postgres -- psql -qAtc "select 1 from pg_database where datname = '$DB_NAME'" | grep -q 1; then
		runuser -u postgres -- createdb -O "$DB_USER" "$DB_NAME"
	fi
	# Asterisk's cdr_pgsql reads the table's columns when it loads, so the CDR table must exist
	# before Asterisk starts; obzvon's migration for it is idempotent and applied here as well.
	psql "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:5432/$DB_NAME" -v ON_ERROR_STOP=1 -q \
		-f "$REPO/migrations/20261124000006_cdr.sql" >/dev/null 2>&1 ||
		die "cannot create the CDR table in $DB_NAME"
}

# ---- RabbitMQ -----------------------------------------------------------------------------

rabbitmq_up() {
	command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
	if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
		return 0
	fi
	say "starting RabbitMQ"
	rabbitmq-server -detached >/dev/null 2>&1 || true
	timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || die "RabbitMQ did not start (see /var/log/rabbitmq)"
}

# ---- Asterisk chroot ----------------------------------------------------------------------

chroot_build() {
	if [ -f "$ROOTFS/.obzvon-ready" ]; then
		chroot_packages
		return 0
	fi
	apt_install debootstrap
	local mirror suite tmp include
	mirror=$(debian_mirror)
	include=$(IFS=,; echo "${CHROOT_PACKAGES[*]}")
	mkdir -p "$TESTBED_DIR" "$LOG_DIR"
	tmp=$TESTBED_DIR/asterisk-root.partial
	for suite in ${OBZVON_ASTERISK_SUITES:-forky sid}; do
		rm -rf "$tmp"
		say "building the Asterisk chroot from Debian $suite ($mirror); about a minute"
		# The sid script serves every current suite; older debootstraps lack a script for forky.
		if debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" \
			/usr/share/debootstrap/scripts/sid >"$LOG_DIR/debootstrap-$suite.log" 2>&1; then
			echo "$suite" >"$tmp/.obzvon-ready"
			rm -rf "$ROOTFS"
			mv "$tmp" "$ROOTFS"
			say "Asterisk chroot ready: $(chroot "$ROOTFS" dpkg-query -W -f='${Version}' asterisk) from $suite"
			return 0
		fi
		say "debootstrap of $suite failed (log: $LOG_DIR/debootstrap-$suite.log)"
	done
	rm -rf "$tmp"
	die "could not build the Asterisk chroot"
}

# A cached chroot keeps working even if the archive changes; only packages added to
# CHROOT_PACKAGES since it was built are fetched.
chroot_packages() {
	local missing=()
	for pkg in "${CHROOT_PACKAGES[@]}"; do
		chroot "$ROOTFS" dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "adding ${missing[*]} to the Asterisk chroot"
	cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
	chroot "$ROOTFS" apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Operator phones beyond the six of pjsip.conf, for load and pacing runs: opN (N = 7..200)
# at 127.0.0.1:(5100+N), so they never meet the trunks (5070, 5090) or op1-op6 (5071-5076).
OPERATORS_MAX=200
operators_conf() {
	echo "; Generated by scripts/testbed.sh: op7..op$OPERATORS_MAX at 127.0.0.1:(5100+N)."
	local n
	for ((n = 7; n <= OPERATORS_MAX; n++)); do
		printf '[op%d](operator-phone)\naors = op%d\n[op%d]\ntype = aor\ncontact = sip:op%d@127.0.0.1:%d\n' \
			"$n" "$n" "$n" "$n" $((5100 + n))
	done
}

# The project's configuration and dialplan go into the chroot on every start.
config_sum() {
	{
		cat "$REPO"/asterisk-config/*.conf "$REPO"/dialplan/*.conf
		operators_conf
	} | sha256sum | cut -d' ' -f1
}

install_config() {
	local etc=$ROOTFS/etc/asterisk
	cp "$REPO"/asterisk-config/*.conf "$etc/"
	operators_conf >"$etc/pjsip_operators.conf"
	config_sum >"$etc/.obzvon-config-sum"
	rm -rf "$etc/obzvon"
	mkdir -p "$etc/obzvon"
	cp "$REPO"/dialplan/*.conf "$etc/obzvon/"
	mkdir -p "$ROOTFS/run/asterisk" "$ROOTFS/var/log/asterisk" "$ROOTFS/var/spool/asterisk/recording"
	# Stop files from the shipped sample set that would start services we do not configure.
	rm -f "$etc/extensions.ael" "$etc/extensions.lua"
}

# The pid of the test bed's Asterisk whose run directory (in the chroot) is $1 (default the
# first box's), if it runs.
asterisk_pid() {
	local pidfile=$ROOTFS${1:-/run/asterisk}/asterisk.pid pid
	[ -f "$pidfile" ] || return 1
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOTFS" ] || return 1
	echo "$pid"
}

# Whether ARI answers at $1 (default the first box's).
ari_ready() {
	curl -fsS -m 2 -u "$ARI_USER:$ARI_PASSWORD" "${1:-$ARI_URL}/asterisk/info" >/dev/null 2>&1
}

asterisk_start() {
	need_root
	apt_install curl
	mkdir -p "$LOG_DIR"
	chroot_build
	if asterisk_pid >/dev/null &&
		[ "$(cat "$ROOTFS/etc/asterisk/.obzvon-config-sum" 2>/dev/null)" != "$(config_sum)" ]; then
		say "the configuration changed; restarting Asterisk"
		asterisk_stop
	fi
	if asterisk_pid >/dev/null; then
		install_config
		ari_ready && return 0
	else
		install_config
		say "starting Asterisk"
		rm -f "$ROOTFS/run/asterisk/asterisk.ctl"
		# Without -f Asterisk daemonises itself; -n: no colour in its log.
		chroot "$ROOTFS" /usr/sbin/asterisk -n >>"$LOG_DIR/asterisk.out" 2>&1
	fi
	for _ in $(seq 1 150); do
		ari_ready && { say "ARI answers at $ARI_URL"; return 0; }
		sleep 0.2
	done
	tail -n 20 "$ROOTFS/var/log/asterisk/messages.log" >&2 2>/dev/null || true
	die "Asterisk started but ARI did not answer at $ARI_URL within 30 s"
}

asterisk_stop() {
	local pid
	pid=$(asterisk_pid) || return 0
	say "stopping Asterisk (pid $pid)"
	# A clean stop usually takes a second, but Asterisk 22 can wait ~15 s on a reference left
	# by a refused duplicate originate (409); the test bed does not wait for that.
	timeout 4 chroot "$ROOTFS" /usr/sbin/asterisk -rx 'core stop now' >/dev/null 2>&1 || true
	for _ in $(seq 1 10); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	kill -9 "$pid" 2>/dev/null || true
}

asterisk_cli() {
	asterisk_pid >/dev/null || die "Asterisk is not running"
	chroot "$ROOTFS" /usr/sbin/asterisk -rx "$*"
}

# ---- A second Asterisk ("box 2") ------------------------------------------------------------
# The two-box test (tests/two_boxes.rs) runs a second Asterisk from the same chroot, as a second
# Asterisk box would be: the first one's configuration with its own ports (ARI/HTTP 8089, SIP
# 5160, AMI 5039, RTP 40000-44999, the persistent websocket to 8766) and its own run, spool, log,
# cache and database directories, all under /etc/asterisk-box2 and *-box2 in the chroot. It
# dials the same SIPp trunk and knows the same operator phones; a test gives each box its own.
BOX2_ETC=/etc/asterisk-box2
BOX2_ARI_PORT=8089
BOX2_SIP_PORT=5160

box2_config() {
	local etc=$ROOTFS$BOX2_ETC
	rm -rf "$etc"
	cp -a "$ROOTFS/etc/asterisk" "$etc"
	sed -i "s/^bindport = 8088/bindport = $BOX2_ARI_PORT/" "$etc/http.conf"
	sed -i "s/^bind = 127.0.0.1:5060/bind = 127.0.0.1:$BOX2_SIP_PORT/" "$etc/pjsip.conf"
	sed -i 's/^rtpstart = .*/rtpstart = 40000/; s/^rtpend = .*/rtpend = 44999/' "$etc/rtp.conf"
	sed -i 's#^uri = ws://127.0.0.1:8765/#uri = ws://127.0.0.1:8766/#' "$etc/websocket_client.conf"
	sed -i 's/^port = 5038/port = 5039/' "$etc/manager.conf"
	# Every include of the dialplan names the first box's directory.
	grep -rl '/etc/asterisk/' "$etc" | xargs -r sed -i "s#/etc/asterisk/#$BOX2_ETC/#g"
	cat >"$etc/asterisk.conf" <<-CONF
		; Generated by scripts/testbed.sh: the second test-bed Asterisk.
		[directories]
		astcachedir => /var/cache/asterisk-box2
		astetcdir => $BOX2_ETC
		astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
		astvarlibdir => /var/lib/asterisk
		astdbdir => /var/lib/asterisk-box2
		astkeydir => /var/lib/asterisk
		astdatadir => /usr/share/asterisk
		astagidir => /usr/share/asterisk/agi-bin
		astspooldir => /var/spool/asterisk-box2
		astrundir => /run/asterisk-box2
		astlogdir => /var/log/asterisk-box2
		astsbindir => /usr/sbin
		[options]
		systemname = box2
	CONF
	local d
	for d in /var/cache/asterisk-box2 /var/lib/asterisk-box2 /var/spool/asterisk-box2/recording \
		/run/asterisk-box2 /var/log/asterisk-box2; do
		mkdir -p "$ROOTFS$d"
	done
	# Which configuration the running box 2 started from.
	box2_sum >"$etc/.obzvon-box2-sum"
}

box2_sum() {
	{ config_sum; declare -f box2_config | sha256sum; } | sha256sum | cut -d' ' -f1
}

box2_pid() { asterisk_pid /run/asterisk-box2; }

box2_ari_ready() { ari_ready "http://127.0.0.1:$BOX2_ARI_PORT/ari"; }

box2_start() {
	# Its configuration is the first box's, as installed.
	asterisk_start
	if box2_pid >/dev/null && [ "$(cat "$ROOTFS$BOX2_ETC/.obzvon-box2-sum" 2>/dev/null)" != "$(box2_sum)" ]; then
		say "the configuration changed; restarting box 2"
		box2_stop
	fi
	if box2_pid >/dev/null; then
		box2_ari_ready && return 0
	else
		box2_config
		say "starting box 2 (a second Asterisk)"
		rm -f "$ROOTFS/run/asterisk-box2/asterisk.ctl"
		chroot "$ROOTFS" /usr/sbin/asterisk -n -C "$BOX2_ETC/asterisk.conf" >>"$LOG_DIR/asterisk-box2.out" 2>&1
	fi
	for _ in $(seq 1 150); do
		box2_ari_ready && { say "box 2: ARI answers at http://127.0.0.1:$BOX2_ARI_PORT/ari"; return 0; }
		sleep 0.2
	done
	tail -n 20 "$ROOTFS/var/log/asterisk-box2/messages.log" >&2 2>/dev/null || true
	die "box 2 started but its ARI did not answer within 30 s"
}

# stop: as `asterisk stop`; kill: SIGKILL, as a box that loses power.
box2_stop() {
	local pid
	pid=$(box2_pid) || return 0
	if [ "${1:-}" = kill ]; then
		say "killing box 2 (pid $pid)"
		kill -9 "$pid" 2>/dev/null || true
	else
		say "stopping box 2 (pid $pid)"
		timeout 4 chroot "$ROOTFS" /usr/sbin/asterisk -C "$BOX2_ETC/asterisk.conf" -rx 'core stop now' >/dev/null 2>&1 || true
	fi
	for _ in $(seq 1 10); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$ROOTFS/run/asterisk-box2/asterisk.pid"; return 0; }
		sleep 0.2
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$ROOTFS/run/asterisk-box2/asterisk.pid"
}

# ---- SIPp ---------------------------------------------------------------------------------

# The trunk SIPp this script started, if it still runs: the pid in its pid file, checked to be
# our trunk scenario on our port (a test bed from before pid files: found by that command line).
trunk_pids() {
	local pid
	is_trunk() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "scripts/sipp/trunk-uas.xml -i 127.0.0.1 -p $TRUNK_PORT "; }
	pid=$(cat "$LOG_DIR/trunk.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && is_trunk "$pid"; then
		echo "$pid"
		return 0
	fi
	for pid in $(pgrep -x sipp 2>/dev/null); do
		if is_trunk "$pid"; then
			echo "$pid" >"$LOG_DIR/trunk.pid"
			echo "$pid"
			return 0
		fi
	done
	return 0
}

trunk_sum() {
	sha256sum "$REPO/scripts/sipp/trunk-uas.xml" | cut -d' ' -f1
}

trunk_start() {
	apt_install sip-tester
	mkdir -p "$LOG_DIR"
	if [ -n "$(trunk_pids)" ]; then
		# A trunk started from an older scenario is restarted (it is the test bed's own).
		[ "$(cat "$LOG_DIR/trunk.sum" 2>/dev/null)" = "$(trunk_sum)" ] && return 0
		say "the trunk scenario changed; restarting the SIPp trunk"
		trunk_stop
		sleep 0.5
	fi
	say "starting the SIPp trunk on 127.0.0.1:$TRUNK_PORT"
	trunk_sum >"$LOG_DIR/trunk.sum"
	# With -bg SIPp forks and its parent exits 99, so success is judged by the process.
	(cd "$LOG_DIR" && sipp -sf "$REPO/scripts/sipp/trunk-uas.xml" -i 127.0.0.1 -p $TRUNK_PORT \
		-mi 127.0.0.1 -mp 16000 -key audio_port 16000 -bg -nostdin -trace_err -error_file "$LOG_DIR/trunk-errors.log" \
		>"$LOG_DIR/trunk.out" 2>&1) || true
	# sipp -bg prints the background process's pid.
	grep -oE 'PID=\[[0-9]+\]' "$LOG_DIR/trunk.out" | grep -oE '[0-9]+' >"$LOG_DIR/trunk.pid" || true
	for _ in $(seq 1 20); do
		[ -n "$(trunk_pids)" ] && return 0
		sleep 0.1
	done
	die "SIPp trunk did not start: $(cat "$LOG_DIR/trunk.out")"
}

trunk_stop() {
	local pids
	pids=$(trunk_pids)
	[ -n "$pids" ] && kill $pids 2>/dev/null || true
}

print_env() {
	cat <<-ENV
		export DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:5432/$DB_NAME
		export OBZVON_DATABASE__URL=postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:5432/$DB_NAME
		export OBZVON_ARI__URL=$ARI_URL
		export OBZVON_ARI__USERNAME=$ARI_USER
		export OBZVON_ARI__PASSWORD=$ARI_PASSWORD
		export OBZVON_AMQP__URL=amqp://guest:guest@127.0.0.1:5672/%2f
	ENV
}

# Headless Chromium and its WebDriver from Debian, for the console's browser tests (tests/console.rs);
# DejaVu so pages render with real fonts.
browser_install() {
	apt_install chromium chromium-driver fonts-dejavu-core
}

case "${1:-}" in
up)
	need_root
	started=$(date +%s)
	# prometheus: for promtool, which checks and unit-tests alerts/ in the test suite.
	apt_install curl sip-tester prometheus iproute2
	browser_install
	postgres_up
	rabbitmq_up
	asterisk_start
	trunk_start
	say "test bed ready in $(($(date +%s) - started)) s"
	;;
down)
	trunk_stop
	asterisk_stop
	;;
asterisk)
	case "${2:-}" in
	start) asterisk_start ;;
	stop) asterisk_stop ;;
	restart) asterisk_stop && asterisk_start ;;
	status) if pid=$(asterisk_pid); then echo "running (pid $pid)"; else echo "stopped"; exit 1; fi ;;
	*) die "usage: $0 asterisk start|stop|restart|status" ;;
	esac
	;;
cli)
	shift
	asterisk_cli "$@"
	;;
trunk)
	case "${2:-}" in
	start) trunk_start ;;
	stop) trunk_stop ;;
	*) die "usage: $0 trunk start|stop" ;;
	esac
	;;
box2)
	case "${2:-}" in
	start) box2_start ;;
	stop) box2_stop ;;
	kill) box2_stop kill ;;
	status) if pid=$(box2_pid); then echo "running (pid $pid)"; else echo "stopped"; exit 1; fi ;;
	*) die "usage: $0 box2 start|stop|kill|status" ;;
	esac
	;;
browser) need_root && browser_install ;;
env) print_env ;;
*)
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac

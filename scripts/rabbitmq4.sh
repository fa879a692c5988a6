#!/usr/bin/env bash
# scripts/rabbitmq4.sh — a RabbitMQ 4.0 broker beside the local 3.10 one, for the tests and CI.
#
#   bash scripts/rabbitmq4.sh up       build the root if needed, start the node, wait for AMQP,
#                                      print the AMQP URL
#   bash scripts/rabbitmq4.sh down     stop the node, its epmd, and unmount /proc of the root
#   bash scripts/rabbitmq4.sh status   exit 0 when the node answers AMQP (prints its version)
#   bash scripts/rabbitmq4.sh env      print `export` lines that point the tests at it:
#                                      eval "$(bash scripts/rabbitmq4.sh env)"
#   bash scripts/rabbitmq4.sh exec CMD [ARGS...]
#                                      run CMD inside the root with the node's environment
#   bash scripts/rabbitmq4.sh test [go test args]
#                                      `up`, then scripts/test.sh on the packages that talk to
#                                      the broker ($WARREN_RMQ4_PKGS), against this node
#
# Debian 12's rabbitmq-server is 3.10; Debian 13's (trixie) is 4.0 with Erlang 27. `up`
# builds a Debian 13 root with debootstrap (minbase, from the mirror of this machine's
# apt sources) in $WARREN_RMQ4_CACHE/trixie, installs rabbitmq-server in it, mounts /proc
# inside it and starts the node there with chroot, as root. A root is only used once it is
# complete (a marker file written last); a half-built one from an interrupted run is
# removed and built again. The 3.10 broker (rabbit@localhost, 5672, 25672, epmd on 4369) is
# never touched: this node has its own name, ports, epmd port, config and data directory.
#
# Environment (defaults in brackets):
#   WARREN_RMQ4_CACHE   [/var/cache/warren]   where the root is kept (outside the repository)
#   WARREN_RMQ4_MIRROR  [the first deb.debian.org-style URI of /etc/apt/sources.list*]
#   WARREN_RMQ4_PORT    [5673]   AMQP port
#   WARREN_RMQ4_TIMEOUT [180]    seconds to wait for the node to answer AMQP after a start
#   WARREN_RMQ4_PKGS    [./broker/ ./worker/ ./cmd/warren/ ./examples/ ./internal/... but clustertest]
#                                the packages `test` runs (the internal ones without a broker
#                                finish at once)
#
# Inside the root (paths below are inside it):
#   node name rabbit4@localhost; AMQP 127.0.0.1:5673; distribution port 25673;
#   its own epmd on 127.0.0.1:4370 (ERL_EPMD_PORT), so stopping it never affects the host's
#   epmd on 4369; distribution on 127.0.0.1 only; config /etc/warren-rabbit4/rabbitmq.conf
#   and advanced.config (consumer timeouts checked every second: channel_tick_interval);
#   data /var/lib/warren-rabbit4/<node> (RABBITMQ_MNESIA_BASE), logs /var/log/warren-rabbit4
#   (<node>.log); plugin rabbitmq_consistent_hash_exchange (for ordered routes; enabled_plugins
#   is rewritten on every start); run as root inside the root (Debian's wrappers that switch to
#   the rabbitmq user are bypassed: /usr/lib/rabbitmq/bin comes first on PATH).
#
# More nodes on the same root (e.g. a 4.0 cluster): `exec` passes every RABBITMQ_* and
# ERL_* variable of the caller through, over the defaults above, and runs CMD with
# chroot (up, down, status and test ignore such variables: they are about the default
# node). A second node with its own name, ports and data directory (same epmd, same
# cookie, so they can be clustered):
#
#   export RABBITMQ_NODENAME=rabbit4b@localhost RABBITMQ_NODE_PORT=5674 RABBITMQ_DIST_PORT=25674
#   export RABBITMQ_CONFIG_FILE=/etc/warren-rabbit4/b.conf   # write it with `exec sh -c`
#   bash scripts/rabbitmq4.sh exec sh -c 'setsid rabbitmq-server >/var/log/warren-rabbit4/b.out 2>&1 &'
#   bash scripts/rabbitmq4.sh exec rabbitmqctl await_startup
#   bash scripts/rabbitmq4.sh exec rabbitmqctl stop_app   # then join_cluster rabbit4@localhost ...
#
# The config file's listener decides the AMQP port (listeners.tcp.local = 127.0.0.1:PORT);
# each node keeps its data in its own folder under RABBITMQ_MNESIA_BASE. A worked example,
# a private node per test with its own limits: StartRabbit4 in internal/testenv/rabbit4.go
# (`test` sets WARREN_TEST_RABBITMQ4 to this script for it).
# `down` stops the default node only; stop the others with `exec rabbitmqctl stop`.
set -euo pipefail

CACHE="${WARREN_RMQ4_CACHE:-/var/cache/warren}"
ROOT="$CACHE/trixie"
PORT="${WARREN_RMQ4_PORT:-5673}"
TIMEOUT="${WARREN_RMQ4_TIMEOUT:-180}"
NODE="rabbit4@localhost"
DIST_PORT=25673
EPMD_PORT=4370
# The recipe's version: a root built by an older recipe is built again.
RECIPE=1
MARKER="$ROOT/.warren-rmq4-complete"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '%s\n' "$*"; }
err() { printf 'rabbitmq4: %s\n' "$*" >&2; }
die() {
	err "$*"
	exit 1
}

need_root() { [[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap, mount and chroot need it)"; }

# mirror: the Debian mirror this machine's apt uses (deb822 URIs: or one-line deb).
mirror() {
	local m
	if [[ -n "${WARREN_RMQ4_MIRROR:-}" ]]; then
		say "$WARREN_RMQ4_MIRROR"
		return
	fi
	m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '
			/^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) print $i }
			/^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }
		' | grep -E '/debian/?$' | grep -v security | head -n 1)" || true
	say "${m:-http://deb.debian.org/debian}"
}

# ------------------------------------------------------------------ the root

# unmount_under DIR: unmount everything mounted at or below DIR, deepest first.
unmount_under() {
	local dir="$1" m
	[[ -d "$dir" ]] || return 0
	dir="$(cd "$dir" && pwd -P)"
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m"
		done
}

root_complete() { [[ -f "$MARKER" ]] && [[ "$(cat "$MARKER")" == "$RECIPE" ]]; }

build_root() {
	local part="$ROOT.partial" start=$SECONDS
	if ! command -v debootstrap >/dev/null 2>&1; then
		say "rabbitmq4: installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
	fi
	mkdir -p "$CACHE"
	# Leftovers of an interrupted build, or a root of an older recipe.
	unmount_under "$part"
	rm -rf "$part"
	if [[ -d "$ROOT" ]]; then
		err "removing the incomplete or outdated root $ROOT"
		if mountpoint -q "$ROOT/proc"; then
			# A node of an older recipe may still run from it.
			timeout 120 chroot "$ROOT" /usr/bin/env -i PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin \
				HOME=/var/lib/rabbitmq RABBITMQ_NODENAME="$NODE" ERL_EPMD_PORT="$EPMD_PORT" \
				sh -c 'rabbitmqctl -q stop; epmd -kill' >/dev/null 2>&1 || true
		fi
		unmount_under "$ROOT"
		rm -rf "$ROOT"
	fi
	say "rabbitmq4: building a Debian 13 root in $part from $(mirror)"
	debootstrap --variant=minbase trixie "$part" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/debootstrap.log"
	# Services must not start while packages are installed.
	printf '#!/bin/sh\nexit 101\n' >"$part/usr/sbin/policy-rc.d"
	chmod 755 "$part/usr/sbin/policy-rc.d"
	mount -t proc proc "$part/proc"
	if ! chroot "$part" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
		sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends rabbitmq-server && apt-get clean' \
		>"$CACHE/apt.log" 2>&1; then
		umount "$part/proc"
		die "installing rabbitmq-server in the root failed; see $CACHE/apt.log"
	fi
	umount "$part/proc"
	mkdir -p "$part/etc/warren-rabbit4" "$part/var/lib/warren-rabbit4" "$part/var/log/warren-rabbit4"
	chown rabbitmq:rabbitmq "$part/var/lib/warren-rabbit4" "$part/var/log/warren-rabbit4" 2>/dev/null ||
		chroot "$part" chown rabbitmq:rabbitmq /var/lib/warren-rabbit4 /var/log/warren-rabbit4
	echo '[].' >"$part/etc/warren-rabbit4/enabled_plugins"
	say "$RECIPE" >"$part/.warren-rmq4-complete"
	mv "$part" "$ROOT"
	say "rabbitmq4: root built in $((SECONDS - start))s ($(du -sh "$ROOT" | cut -f1))"
}

mount_proc() {
	if ! mountpoint -q "$ROOT/proc"; then
		mount -t proc proc "$ROOT/proc"
	fi
}

# ------------------------------------------------------------------ inside the root

# in_root CMD...: run CMD in the root with the node's environment; the caller's
# RABBITMQ_* and ERL_* variables win over the defaults.
in_root() {
	local -a envs=(
		PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin
		HOME=/var/lib/rabbitmq LANG=C.UTF-8 LC_ALL=C.UTF-8
		RABBITMQ_NODENAME="$NODE"
		RABBITMQ_NODE_PORT="$PORT"
		RABBITMQ_DIST_PORT="$DIST_PORT"
		ERL_EPMD_PORT="$EPMD_PORT"
		ERL_EPMD_ADDRESS=127.0.0.1
		RABBITMQ_CONFIG_FILE=/etc/warren-rabbit4/rabbitmq.conf
		RABBITMQ_ENABLED_PLUGINS_FILE=/etc/warren-rabbit4/enabled_plugins
		RABBITMQ_ADVANCED_CONFIG_FILE=/etc/warren-rabbit4/advanced.config
		RABBITMQ_MNESIA_BASE=/var/lib/warren-rabbit4
		RABBITMQ_LOG_BASE=/var/log/warren-rabbit4
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
		RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
	)
	local v
	while IFS= read -r v; do
		envs+=("$v")
	done < <(env | grep -E '^(RABBITMQ|ERL)_[A-Za-z0-9_]*=' || true)
	if [[ "${IN_ROOT_EXEC:-}" == 1 ]]; then
		exec chroot "$ROOT" /usr/bin/env -i "${envs[@]}" "$@"
	fi
	chroot "$ROOT" /usr/bin/env -i "${envs[@]}" "$@"
}

write_config() {
	cat >"$ROOT/etc/warren-rabbit4/rabbitmq.conf" <<EOF
# Written by scripts/rabbitmq4.sh; rewritten on every start.
listeners.tcp.local = 127.0.0.1:$PORT
loopback_users.guest = true
EOF
	# Consumer timeouts are checked on the channel's tick (60s by default):
	# every second, so that a test of a short timeout ends soon.
	cat >"$ROOT/etc/warren-rabbit4/advanced.config" <<EOF
%% Written by scripts/rabbitmq4.sh; rewritten on every start.
[{rabbit, [{channel_tick_interval, 1000}]}].
EOF
	# Ordered routes declare consistent-hash exchanges.
	echo '[rabbitmq_consistent_hash_exchange].' >"$ROOT/etc/warren-rabbit4/enabled_plugins"
}

# amqp_handshake: the server answers the protocol header with Connection.Start.
amqp_handshake() {
	local hex
	# shellcheck disable=SC2016 # $0 expands in the inner bash
	hex="$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
		printf "AMQP\x00\x00\x09\x01" >&3
		head -c 11 <&3 | od -An -tx1 | tr -d " \n"' "$PORT" 2>/dev/null)" || return 1
	[[ "$hex" =~ ^010000[0-9a-f]{8}000a000a$ ]]
}


cmd_up() {
	need_root
	if root_complete && mountpoint -q "$ROOT/proc" && amqp_handshake; then
		say "rabbitmq4: already up"
		cmd_env_url
		return
	fi
	root_complete || build_root
	mount_proc
	write_config
	local log="$ROOT/var/log/warren-rabbit4/$NODE.out" deadline
	if ! in_root rabbitmqctl -q ping >/dev/null 2>&1; then
		say "rabbitmq4: starting $NODE on 127.0.0.1:$PORT"
		# setsid: the node outlives this script and is not in its process group.
		setsid bash "$HERE/rabbitmq4.sh" exec rabbitmq-server >"$log" 2>&1 </dev/null &
	fi
	deadline=$((SECONDS + TIMEOUT))
	until amqp_handshake; do
		if ((SECONDS >= deadline)); then
			err "the node did not answer AMQP on 127.0.0.1:$PORT within ${TIMEOUT}s; last lines of $log:"
			tail -n 30 "$log" >&2 || true
			exit 1
		fi
		sleep 1
	done
	say "rabbitmq4: up: $(in_root rabbitmqctl -q version 2>/dev/null || echo '?')"
	cmd_env_url
}

cmd_env_url() { say "amqp://guest:guest@127.0.0.1:$PORT/"; }

cmd_down() {
	need_root
	if ! root_complete; then
		say "rabbitmq4: no root, nothing to stop"
		return
	fi
	if mountpoint -q "$ROOT/proc" && in_root rabbitmqctl -q ping >/dev/null 2>&1; then
		say "rabbitmq4: stopping $NODE"
		# stop waits for the node's process to end.
		in_root rabbitmqctl -q stop >/dev/null 2>&1 || err "rabbitmqctl stop failed"
	fi
	if mountpoint -q "$ROOT/proc"; then
		in_root epmd -kill >/dev/null 2>&1 || true
	fi
	unmount_under "$ROOT"
	say "rabbitmq4: down"
}

cmd_status() {
	if root_complete && mountpoint -q "$ROOT/proc" && amqp_handshake; then
		say "rabbitmq4: up on 127.0.0.1:$PORT: RabbitMQ $(in_root rabbitmqctl -q version 2>/dev/null || echo '?')"
		return 0
	fi
	say "rabbitmq4: down"
	return 1
}

cmd_env() {
	say "export WARREN_TEST_AMQP_URL=$(cmd_env_url)"
	say "export WARREN_TEST_RABBITMQCTL='bash $HERE/rabbitmq4.sh exec rabbitmqctl'"
}

cmd_exec() {
	need_root
	root_complete || die "no root yet: run 'bash scripts/rabbitmq4.sh up' first"
	mount_proc
	# The command replaces this script: a caller that started it owns it.
	IN_ROOT_EXEC=1 in_root "$@"
}

cmd_test() {
	local start=$SECONDS url rc=0
	cmd_up
	url="$(cmd_env_url)"
	say "rabbitmq4: the suite against RabbitMQ 4 at $url"
	WARREN_TEST_AMQP_URL="$url" \
		WARREN_TEST_RABBITMQCTL="bash $HERE/rabbitmq4.sh exec rabbitmqctl" \
		WARREN_TEST_RABBITMQ4="$HERE/rabbitmq4.sh" \
		WARREN_TEST_PKGS="${WARREN_RMQ4_PKGS:-./broker/ ./worker/ ./cmd/warren/ ./examples/ $(go list ./internal/... | grep -v /internal/clustertest | tr '\n' ' ')}" \
		bash "$HERE/test.sh" "$@" || rc=$?
	say "rabbitmq4: the suite against RabbitMQ 4 took $((SECONDS - start))s (rc=$rc)"
	return "$rc"
}

# default_node_only: up, down, status and test are about the default node; a
# RABBITMQ_* or ERL_* variable meant for another broker (the host's 3.10 one,
# say) must not reach it.
default_node_only() {
	local v
	for v in $(compgen -e); do
		case "$v" in
		RABBITMQ_* | ERL_*) unset "$v" ;;
		esac
	done
}

case "${1:-}" in
up | down | status | test) default_node_only ;;
esac

case "${1:-}" in
up) cmd_up ;;
test)
	shift
	cmd_test "$@"
	;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
exec)
	shift
	[[ $# -gt 0 ]] || die "usage: $0 exec CMD [ARGS...]"
	cmd_exec "$@"
	;;
*)
	say "usage: $0 up|down|status|env|test [go test args]|exec CMD..." >&2
	exit 2
	;;
esac

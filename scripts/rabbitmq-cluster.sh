#!/usr/bin/env bash
# scripts/rabbitmq-cluster.sh — a private three-node RabbitMQ cluster on this machine, for
# warren's cluster tests (internal/clustertest, the cluster soak). It never touches the shared
# broker (rabbit@localhost on 5672): its nodes have their own names, ports, data folders and
# Erlang cookie.
#
#   bash scripts/rabbitmq-cluster.sh up          start the nodes that are down, join them into
#                                                one cluster, wait until all three run (idempotent)
#   bash scripts/rabbitmq-cluster.sh down        stop every node and remove the data folder
#   bash scripts/rabbitmq-cluster.sh status      the nodes, their ports and whether each runs
#   bash scripts/rabbitmq-cluster.sh urls        the cluster's addresses, in WARREN_AMQP_URL form
#   bash scripts/rabbitmq-cluster.sh kill N      SIGKILL node N (1..3): a crash
#   bash scripts/rabbitmq-cluster.sh stop N      stop node N cleanly
#   bash scripts/rabbitmq-cluster.sh start N     start node N again (it rejoins the cluster) and
#                                                wait until it runs
#   bash scripts/rabbitmq-cluster.sh pid N       the OS process id of node N's Erlang VM
#   bash scripts/rabbitmq-cluster.sh ctl ARGS    rabbitmqctl ARGS against the first running node
#
# Environment (defaults in brackets):
#   WARREN_CLUSTER_NAME      [wc]   nodes are <name>1@localhost .. <name>3@localhost
#   WARREN_CLUSTER_PORT      [5681] AMQP port of node 1; node N listens on PORT+N-1. Erlang
#                                   distribution ports are PORT+20000+N-1.
#   WARREN_CLUSTER_DIR       [/var/cache/warren/cluster-<name>] data, logs, config and the cookie,
#                                   as seen by the nodes (inside the chroot, when there is one)
#   WARREN_CLUSTER_ROOT      [""]   the root the nodes run in, as seen from here: "" for this
#                                   system, a chroot's folder otherwise
#   WARREN_CLUSTER_RUN       ["chroot $WARREN_CLUSTER_ROOT", or "" without a root] command
#                                   prefix that runs a program in that root
#
# RabbitMQ 4.0 in the Debian 13 root of scripts/rabbitmq4.sh (its own epmd on 4370):
#   ERL_EPMD_PORT=4370 WARREN_CLUSTER_NAME=w4c WARREN_CLUSTER_PORT=5691 \
#     WARREN_CLUSTER_ROOT=/var/cache/warren/trixie bash scripts/rabbitmq-cluster.sh up
#   WARREN_CLUSTER_SBIN      [/usr/lib/rabbitmq/bin] where rabbitmq-server and rabbitmqctl are
#                                   (in that root); the wrappers in /usr/sbin are not used, since
#                                   they switch user and drop the environment
#   WARREN_CLUSTER_TIMEOUT   [180]  seconds to wait for a node to start
#
# The nodes run as root with HOME set to the cluster folder, whose .erlang.cookie is made
# here: the cookie of the system's own node (/var/lib/rabbitmq/.erlang.cookie) is neither
# read nor changed. Only the default guest user exists (loopback connections only).
set -euo pipefail

NAME="${WARREN_CLUSTER_NAME:-wc}"
PORT="${WARREN_CLUSTER_PORT:-5681}"
DIR="${WARREN_CLUSTER_DIR:-/var/cache/warren/cluster-$NAME}"
ROOTFS="${WARREN_CLUSTER_ROOT:-}"
if [[ -n "$ROOTFS" ]]; then
	read -r -a RUN <<<"${WARREN_CLUSTER_RUN:-chroot $ROOTFS}"
else
	read -r -a RUN <<<"${WARREN_CLUSTER_RUN:-}"
fi
SBIN="${WARREN_CLUSTER_SBIN:-/usr/lib/rabbitmq/bin}"
TIMEOUT="${WARREN_CLUSTER_TIMEOUT:-180}"
NODES=(1 2 3)

say() { printf 'cluster %s: %s\n' "$NAME" "$*"; }
err() { printf 'cluster %s: %s\n' "$NAME" "$*" >&2; }

node() { printf '%s%s@localhost' "$NAME" "$1"; }
amqp_port() { echo $((PORT + $1 - 1)); }
dist_port() { echo $((PORT + 20000 + $1 - 1)); }
host_path() { printf '%s%s' "$ROOTFS" "$1"; }

check_node_arg() {
	case "${1:-}" in
	1 | 2 | 3) ;;
	*)
		err "node must be 1, 2 or 3, got '${1:-}'"
		exit 2
		;;
	esac
}

# in_env N CMD...: run CMD in the nodes' root with node N's environment.
in_env() {
	local n="$1" d="$DIR/n$1"
	shift
	"${RUN[@]}" env HOME="$DIR" \
		RABBITMQ_NODENAME="$(node "$n")" \
		RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
		RABBITMQ_DIST_PORT="$(dist_port "$n")" \
		RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
		RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
		RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
		RABBITMQ_MNESIA_BASE="$d/mnesia" \
		RABBITMQ_LOG_BASE="$d/log" \
		RABBITMQ_PID_FILE="$d/pid" \
		RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand" \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		ERL_EPMD_ADDRESS=127.0.0.1 \
		"$@"
}

# ctl N ARGS...: rabbitmqctl against node N.
ctl() {
	local n="$1"
	shift
	in_env "$n" timeout 120 "$SBIN/rabbitmqctl" -q -n "$(node "$n")" "$@"
}

running() { ctl "$1" ping >/dev/null 2>&1; }

# app_running N: the node answers and its rabbit app runs (AMQP listens).
app_running() {
	timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$(amqp_port "$1")" 2>/dev/null &&
		ctl "$1" await_startup --timeout 5 >/dev/null 2>&1
}

prepare() {
	local n d hd
	mkdir -p "$(host_path "$DIR")"
	chmod 700 "$(host_path "$DIR")"
	local cookie
	cookie="$(host_path "$DIR")/.erlang.cookie"
	if [[ ! -s "$cookie" ]]; then
		(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cookie")
	fi
	chmod 400 "$cookie"
	: >"$(host_path "$DIR")/rabbitmq-env.conf"
	for n in "${NODES[@]}"; do
		d="$DIR/n$n"
		hd="$(host_path "$d")"
		mkdir -p "$hd/mnesia" "$hd/log"
		cat >"$hd/rabbitmq.conf" <<-EOF
			listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
			cluster_partition_handling = pause_minority
			log.file.level = info
			log.console = false
		EOF
		echo '[].' >"$hd/advanced.config"
		echo '[rabbitmq_consistent_hash_exchange].' >"$hd/enabled_plugins" # ordered routes
	done
}

start_node() {
	local n="$1" hd
	hd="$(host_path "$DIR/n$n")"
	if app_running "$n"; then
		return 0
	fi
	if ! running "$n"; then
		say "starting $(node "$n") (AMQP 127.0.0.1:$(amqp_port "$n"), distribution $(dist_port "$n"))"
		rm -f "$hd/pid"
		# -detached returns at once; the node then lives on its own. Its output goes to
		# the node's log folder.
		in_env "$n" "$SBIN/rabbitmq-server" -detached >>"$hd/log/start.out" 2>&1 || {
			err "rabbitmq-server -detached failed for $(node "$n"); see $hd/log/"
			return 1
		}
	fi
	wait_node "$n"
}

wait_node() {
	local n="$1" deadline=$((SECONDS + TIMEOUT)) hd
	hd="$(host_path "$DIR/n$1")"
	until app_running "$n"; do
		if ((SECONDS >= deadline)); then
			err "$(node "$n") did not start within ${TIMEOUT}s; last lines of its log:"
			tail -n 30 "$hd/log/$(node "$n").log" "$hd/log/start.out" >&2 2>/dev/null || true
			return 1
		fi
		sleep 1
	done
}

# joined N: node N's cluster lists node 1 among its members.
joined() {
	ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node 1)\""
}

join_node() {
	local n="$1"
	if joined "$n"; then
		return 0
	fi
	local out
	out="$(host_path "$DIR/n$n")/log/join.out"
	say "joining $(node "$n") to $(node 1)"
	# The CLI logs the node's feature-flag chatter; keep it in the node's log folder.
	{ ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node 1)" && ctl "$n" start_app; } >>"$out" 2>&1 || {
		err "joining $(node "$n") failed; see $out"
		tail -n 20 "$out" >&2
		return 1
	}
	wait_node "$n"
}

# wait_cluster: every node runs and sees all three as running.
wait_cluster() {
	local deadline=$((SECONDS + TIMEOUT)) n ok out
	while true; do
		ok=1
		for n in "${NODES[@]}"; do
			out="$(ctl "$n" cluster_status --formatter json 2>/dev/null)" || {
				ok=0
				break
			}
			for m in "${NODES[@]}"; do
				# running_nodes lists the members that run right now.
				if ! grep -q "\"running_nodes\":\[[^]]*\"$(node "$m")\"" <<<"$out"; then
					ok=0
				fi
			done
		done
		((ok)) && return 0
		if ((SECONDS >= deadline)); then
			err "the cluster did not form within ${TIMEOUT}s; cluster_status of $(node 1):"
			ctl 1 cluster_status >&2 || true
			return 1
		fi
		sleep 1
	done
}

node_pid() {
	local f
	f="$(host_path "$DIR/n$1/pid")"
	[[ -s "$f" ]] && cat "$f"
}

kill_node() {
	local n="$1" pid
	pid="$(node_pid "$n")" || true
	if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
		say "$(node "$n") is not running"
		return 0
	fi
	say "killing $(node "$n") (pid $pid) with SIGKILL"
	kill -KILL "$pid"
	local deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		((SECONDS < deadline)) || {
			err "pid $pid still alive"
			return 1
		}
		sleep 0.2
	done
}

stop_node() {
	local n="$1" pid
	pid="$(node_pid "$n")" || true
	if running "$n"; then
		say "stopping $(node "$n")"
		ctl "$n" stop >/dev/null 2>&1 || true
	fi
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		local deadline=$((SECONDS + 30))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
	return 0
}

urls() {
	local n out=()
	for n in "${NODES[@]}"; do
		out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/")
	done
	(
		IFS=,
		echo "${out[*]}"
	)
}

status() {
	local n rc=0
	for n in "${NODES[@]}"; do
		if app_running "$n"; then
			say "$(node "$n") runs (AMQP 127.0.0.1:$(amqp_port "$n"), pid $(node_pid "$n" || echo '?'))"
		else
			say "$(node "$n") DOWN (AMQP 127.0.0.1:$(amqp_port "$n"))"
			rc=1
		fi
	done
	return "$rc"
}

up() {
	local n
	if [[ ! -x "$(host_path "$SBIN/rabbitmq-server")" ]]; then
		err "$(host_path "$SBIN/rabbitmq-server") not found: install rabbitmq-server (apt-get install -y rabbitmq-server)"
		return 1
	fi
	prepare
	for n in "${NODES[@]}"; do
		start_node "$n"
	done
	join_node 2
	join_node 3
	wait_cluster
	say "up: $(urls)"
}

down() {
	local n
	for n in "${NODES[@]}"; do
		stop_node "$n"
	done
	if [[ -n "$DIR" && "$DIR" != / ]]; then
		rm -rf "$(host_path "$DIR")"
	fi
	say "down"
}

usage() {
	err "usage: $0 up|down|status|urls|kill N|stop N|start N|pid N|ctl ARGS..."
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	up) up ;;
	down) down ;;
	status) status ;;
	urls) urls ;;
	kill)
		check_node_arg "${1:-}"
		kill_node "$1"
		;;
	stop)
		check_node_arg "${1:-}"
		stop_node "$1"
		;;
	start)
		check_node_arg "${1:-}"
		start_node "$1"
		;;
	pid)
		check_node_arg "${1:-}"
		node_pid "$1"
		;;
	ctl)
		local n
		for n in "${NODES[@]}"; do
			if running "$n"; then
				ctl "$n" "$@"
				return
			fi
		done
		err "no node runs"
		return 1
		;;
	-h | --help | help) usage ;;
	*)
		usage
		return 2
		;;
	esac
}

main "$@"

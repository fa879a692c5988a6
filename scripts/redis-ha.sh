#!/usr/bin/env bash
# scripts/redis-ha.sh — local Redis set-ups with failover, for warren's failover tests
# and for trying WARREN_REDIS_URL against Sentinel and Cluster by hand.
#
#   bash scripts/redis-ha.sh up [sentinel|cluster]      start what is missing, wait until healthy
#   bash scripts/redis-ha.sh down [sentinel|cluster]    stop the processes this script started
#   bash scripts/redis-ha.sh status [sentinel|cluster]  say what runs; exit 1 when not healthy
#   bash scripts/redis-ha.sh env                        print the test variables (for eval)
#   bash scripts/redis-ha.sh test [go test args...]     up, run the failover tests, then stop
#                                                       what this call started
#
# Two set-ups of plain redis-server processes on loopback, never the shared Redis (6379):
#   sentinel  a master and two replicas (ports 6390-6392) watched by three sentinels
#             (26390-26392) under the master name "warren", quorum 2
#   cluster   six nodes (7000-7005): three masters with a replica each
# Without persistence; data, configs, pid and log files live in $WARREN_REDIS_HA_DIR
# (default ${TMPDIR:-/tmp}/warren-redis-ha). "up" is idempotent: it starts only the
# processes that do not answer (a data node comes back as a replica of the master the
# sentinels name; a cluster node rejoins with its nodes.conf) and rebuilds a set-up
# whose state it cannot repair. Timeouts are short (sentinel down-after 1s, cluster
# node timeout 2s) so that a killed master is replaced within seconds.
#
# Environment (defaults in brackets):
#   WARREN_REDIS_HA_DIR            [${TMPDIR:-/tmp}/warren-redis-ha]
#   WARREN_REDIS_HA_DATA_PORTS     [6390 6391 6392]      sentinel set: master first
#   WARREN_REDIS_HA_SENTINEL_PORTS [26390 26391 26392]
#   WARREN_REDIS_HA_CLUSTER_PORTS  [7000 7001 7002 7003 7004 7005]
#   WARREN_REDIS_HA_TIMEOUT        [60]  seconds to wait for a set-up to be healthy
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${WARREN_REDIS_HA_DIR:-${TMPDIR:-/tmp}/warren-redis-ha}"
read -r -a DATA_PORTS <<<"${WARREN_REDIS_HA_DATA_PORTS:-6390 6391 6392}"
read -r -a SENTINEL_PORTS <<<"${WARREN_REDIS_HA_SENTINEL_PORTS:-26390 26391 26392}"
read -r -a CLUSTER_PORTS <<<"${WARREN_REDIS_HA_CLUSTER_PORTS:-7000 7001 7002 7003 7004 7005}"
TIMEOUT="${WARREN_REDIS_HA_TIMEOUT:-60}"
MASTER_NAME=warren
HOST=127.0.0.1

say() { printf 'redis-ha: %s\n' "$*"; }
err() { printf 'redis-ha: %s\n' "$*" >&2; }
cli() { timeout 5 redis-cli -h "$HOST" -p "$1" "${@:2}" 2>/dev/null; }
pingable() { [[ "$(cli "$1" ping)" == PONG ]]; }

need_binaries() {
	local b missing=()
	for b in redis-server redis-cli; do
		command -v "$b" >/dev/null 2>&1 || missing+=("$b")
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 && [[ "${WARREN_SERVICES_NO_INSTALL:-}" != 1 ]]; then
		say "installing redis-server and redis-tools (missing: ${missing[*]}) ..."
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null || {
			err "apt-get install redis-server redis-tools failed"
			return 1
		}
		return 0
	fi
	err "missing ${missing[*]}: install redis-server and redis-tools (Debian: apt-get install -y redis-server redis-tools)"
	return 1
}

# check_port PORT: fail when something that is not ours holds PORT.
check_port() {
	local port="$1"
	if pingable "$port" && [[ ! -f "$DIR/$port.pid" ]]; then
		err "port $port answers but was not started by this script (pid file $DIR/$port.pid missing); set WARREN_REDIS_HA_*_PORTS to free ports"
		return 1
	fi
}

# wait_for DESCRIPTION COMMAND...: poll COMMAND until it succeeds or TIMEOUT passes.
wait_for() {
	local what="$1" deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@"; do
		if ((SECONDS >= deadline)); then
			err "timed out after ${TIMEOUT}s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

# start_server PORT ARGS...: start a daemonized redis-server on PORT unless it answers.
start_server() {
	local port="$1"
	shift
	pingable "$port" && return 0
	rm -f "$DIR/$port.pid"
	redis-server --port "$port" --bind "$HOST" --daemonize yes --dir "$DIR" \
		--pidfile "$DIR/$port.pid" --logfile "$DIR/$port.log" --save "" --appendonly no \
		--dbfilename "dump-$port.rdb" "$@" >/dev/null
	if ! wait_for "redis-server on port $port" pingable "$port"; then
		tail -n 20 "$DIR/$port.log" >&2 || true
		return 1
	fi
}

# stop_port PORT: SIGKILL-free stop of a process this script started (its pid file).
stop_port() {
	local port="$1" pid
	[[ -f "$DIR/$port.pid" ]] || return 0
	pid="$(cat "$DIR/$port.pid")"
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 10))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$DIR/$port.pid"
}

# ---------------------------------------------------------------- sentinel

sentinel_master() { cli "$1" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ' | sed 's/ $//'; }

# sentinel_healthy: every sentinel names the same master, that master says it is a
# master with two connected replicas, and each sentinel sees the other two.
sentinel_healthy() {
	local p m first="" port
	for p in "${SENTINEL_PORTS[@]}"; do
		m="$(sentinel_master "$p")" || return 1
		[[ -n "$m" ]] || return 1
		[[ -z "$first" || "$m" == "$first" ]] || return 1
		first="$m"
		[[ "$(cli "$p" sentinel master "$MASTER_NAME" | awk 'prev=="num-other-sentinels"{print; exit} {prev=$0}')" == 2 ]] || return 1
		[[ "$(cli "$p" sentinel master "$MASTER_NAME" | awk 'prev=="flags"{print; exit} {prev=$0}')" == master ]] || return 1
	done
	port="${first##* }"
	cli "$port" info replication | grep -q '^role:master' || return 1
	[[ "$(cli "$port" info replication | grep -c '^slave[0-9]*:.*state=online')" == 2 ]]
}

# sentinel_master_answers: a running sentinel names a master that answers as one.
sentinel_master_answers() {
	local p m
	for p in "${SENTINEL_PORTS[@]}"; do
		m="$(sentinel_master "$p")" || continue
		[[ -n "$m" ]] || continue
		cli "${m##* }" info replication | grep -q '^role:master'
		return
	done
	return 1
}

sentinel_conf() {
	local port="$1" master="$2"
	cat >"$DIR/sentinel-$port.conf" <<EOF
port $port
bind $HOST
daemonize yes
pidfile $DIR/$port.pid
logfile $DIR/$port.log
dir $DIR
sentinel monitor $MASTER_NAME $HOST $master 2
sentinel down-after-milliseconds $MASTER_NAME 1000
sentinel failover-timeout $MASTER_NAME 6000
sentinel parallel-syncs $MASTER_NAME 2
EOF
}

sentinel_up() {
	local p any_sentinel=0 master="" port
	mkdir -p "$DIR"
	for p in "${DATA_PORTS[@]}" "${SENTINEL_PORTS[@]}"; do check_port "$p" || return 1; done
	for p in "${SENTINEL_PORTS[@]}"; do
		if pingable "$p" && [[ -n "$(sentinel_master "$p")" ]]; then
			any_sentinel=1
			break
		fi
	done
	if ((any_sentinel)); then
		# After a killed master the sentinels name it until they failed over.
		if ! wait_for "the sentinels to name a master that answers" sentinel_master_answers; then
			err "run 'down sentinel' and 'up sentinel' to start the set afresh"
			return 1
		fi
		master="$(sentinel_master "$p")"
		master="${master##* }"
	fi
	if ((any_sentinel == 0)); then
		# No sentinel knows the set: start it afresh, the first data port as master.
		for p in "${DATA_PORTS[@]}"; do
			stop_port "$p"
			rm -f "$DIR/dump-$p.rdb" # written by a replica's full sync
		done
		master="${DATA_PORTS[0]}"
		start_server "$master" || return 1
		for p in "${DATA_PORTS[@]:1}"; do start_server "$p" --replicaof "$HOST" "$master" || return 1; done
		for p in "${SENTINEL_PORTS[@]}"; do sentinel_conf "$p" "$master"; done
	else
		# Restart what is missing: data nodes as replicas of the sentinels' master
		# (never as an empty master, which would wipe its replicas).
		for p in "${DATA_PORTS[@]}"; do
			[[ "$p" == "$master" ]] && continue
			start_server "$p" --replicaof "$HOST" "$master" || return 1
		done
	fi
	for p in "${SENTINEL_PORTS[@]}"; do
		pingable "$p" && continue
		[[ -f "$DIR/sentinel-$p.conf" ]] || sentinel_conf "$p" "$master"
		redis-server "$DIR/sentinel-$p.conf" --sentinel >/dev/null || return 1
		wait_for "sentinel on port $p" pingable "$p" || return 1
	done
	if ! wait_for "the sentinel set to be healthy" sentinel_healthy; then
		sentinel_status >&2 || true
		return 1
	fi
	port="$(sentinel_master "${SENTINEL_PORTS[0]}")"
	say "sentinel: up, master $MASTER_NAME at ${port// /:}"
}

sentinel_down() {
	local p
	for p in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do stop_port "$p"; done
	rm -f "$DIR"/sentinel-*.conf "$DIR"/dump-*.rdb
	say "sentinel: down"
}

sentinel_status() {
	local p
	for p in "${DATA_PORTS[@]}"; do
		if pingable "$p"; then
			say "sentinel data $p: $(cli "$p" info replication | grep '^role:' | tr -d '\r')"
		else
			say "sentinel data $p: down"
		fi
	done
	for p in "${SENTINEL_PORTS[@]}"; do
		if pingable "$p"; then say "sentinel $p: master $(sentinel_master "$p")"; else say "sentinel $p: down"; fi
	done
	if sentinel_healthy; then say "sentinel: healthy"; else
		say "sentinel: NOT healthy"
		return 1
	fi
}

# ---------------------------------------------------------------- cluster

cluster_node() {
	start_server "$1" --cluster-enabled yes --cluster-config-file "nodes-$1.conf" \
		--cluster-node-timeout 2000 --cluster-replica-validity-factor 0 --appendonly no
}

# cluster_healthy: every node says cluster_state:ok and knows six nodes, there are
# three masters, and each master has a replica whose link is up.
cluster_healthy() {
	local p nodes masters
	for p in "${CLUSTER_PORTS[@]}"; do
		cli "$p" cluster info | grep -q '^cluster_state:ok' || return 1
		[[ "$(cli "$p" cluster info | grep '^cluster_known_nodes:' | tr -dc 0-9)" == "${#CLUSTER_PORTS[@]}" ]] || return 1
	done
	nodes="$(cli "${CLUSTER_PORTS[0]}" cluster nodes)" || return 1
	masters="$(awk '$3 ~ /master/ && $3 !~ /fail/ && $9 != "" {print $1}' <<<"$nodes")"
	[[ "$(wc -l <<<"$masters")" == 3 ]] || return 1
	local m
	for m in $masters; do
		awk -v m="$m" '$4 == m && $3 ~ /slave/ && $3 !~ /fail/ && $8 == "connected"' <<<"$nodes" | grep -q . || return 1
	done
	# Every replica has finished its sync.
	for p in "${CLUSTER_PORTS[@]}"; do
		if cli "$p" info replication | grep -q '^role:slave'; then
			cli "$p" info replication | grep -q '^master_link_status:up' || return 1
			cli "$p" info replication | grep -q '^master_sync_in_progress:0' || return 1
		fi
	done
}

cluster_up() {
	local p fresh=1 addrs=()
	mkdir -p "$DIR"
	for p in "${CLUSTER_PORTS[@]}"; do
		check_port "$p" || return 1
		[[ -s "$DIR/nodes-$p.conf" ]] && fresh=0
	done
	if ((fresh == 0)) && ! cluster_known; then
		fresh=1
	fi
	if ((fresh)); then
		for p in "${CLUSTER_PORTS[@]}"; do
			stop_port "$p"
			rm -f "$DIR/nodes-$p.conf" "$DIR/dump-$p.rdb"
		done
	fi
	for p in "${CLUSTER_PORTS[@]}"; do
		cluster_node "$p" || return 1
		addrs+=("$HOST:$p")
	done
	if ((fresh)); then
		if ! timeout 120 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/cluster-create.log" 2>&1; then
			err "redis-cli --cluster create failed:"
			tail -n 30 "$DIR/cluster-create.log" >&2 || true
			return 1
		fi
	fi
	if ! wait_for "the cluster to be healthy" cluster_healthy; then
		if ((fresh == 0)); then
			say "cluster: not healthy after a restart; building it afresh"
			cluster_down
			cluster_up
			return
		fi
		cluster_status >&2 || true
		return 1
	fi
	say "cluster: up, nodes ${addrs[*]}"
}

# cluster_known: a node that runs has slots assigned (the set-up was created once).
cluster_known() {
	local p
	for p in "${CLUSTER_PORTS[@]}"; do
		if pingable "$p"; then
			[[ "$(cli "$p" cluster info | grep '^cluster_slots_assigned:' | tr -dc 0-9)" == 16384 ]]
			return
		fi
	done
	return 0 # none runs: their nodes.conf files will tell on start
}

cluster_down() {
	local p
	for p in "${CLUSTER_PORTS[@]}"; do
		stop_port "$p"
		rm -f "$DIR/nodes-$p.conf" "$DIR/dump-$p.rdb"
	done
	say "cluster: down"
}

cluster_status() {
	local p
	for p in "${CLUSTER_PORTS[@]}"; do
		if pingable "$p"; then
			say "cluster node $p: $(cli "$p" info replication | grep '^role:' | tr -d '\r'), $(cli "$p" cluster info | grep '^cluster_state:' | tr -d '\r')"
		else
			say "cluster node $p: down"
		fi
	done
	if cluster_healthy; then say "cluster: healthy"; else
		say "cluster: NOT healthy"
		return 1
	fi
}

# ---------------------------------------------------------------- main

sentinel_url() {
	local p hosts=()
	for p in "${SENTINEL_PORTS[@]}"; do hosts+=("$HOST:$p"); done
	local IFS=,
	printf 'redis-sentinel://%s/%s' "${hosts[*]}" "$MASTER_NAME"
}

cluster_url() {
	local p hosts=()
	for p in "${CLUSTER_PORTS[@]}"; do hosts+=("$HOST:$p"); done
	local IFS=,
	printf 'redis://%s' "${hosts[*]}"
}

print_env() {
	printf 'export WARREN_TEST_REDIS_SENTINEL_URL=%q\n' "$(sentinel_url)"
	printf 'export WARREN_TEST_REDIS_CLUSTER_URL=%q\n' "$(cluster_url)"
	printf 'export WARREN_TEST_REDIS_HA_SCRIPT=%q\n' "$ROOT/scripts/redis-ha.sh"
}

# run_tests ARGS...: the failover tests, with the set-ups up; stops afterwards what
# it had to start.
run_tests() {
	local started_s=0 started_c=0 rc=0
	sentinel_healthy || started_s=1
	cluster_healthy || started_c=1
	if ! sentinel_up || ! cluster_up; then
		err "the set-ups did not come up; see the logs in $DIR"
		((started_s)) && sentinel_down
		((started_c)) && cluster_down
		return 1
	fi
	eval "$(print_env)"
	cd "$ROOT"
	if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	local race=(-race)
	[[ "$(go env CGO_ENABLED)" == 1 ]] || race=()
	go vet -tags redisha ./internal/redisha/ || rc=$?
	if ((rc == 0)); then
		# The full -v log goes to a file; the summary lines (one REDISHA line per
		# failover run) and every failure are printed.
		local log="$DIR/test.log"
		go test "${race[@]}" -count=1 -v -tags redisha -timeout 15m "$@" ./internal/redisha/ >"$log" 2>&1 || rc=$?
		grep -E '^(--- |REDISHA |ok |FAIL|PASS$|panic:)|^ +[a-z_]+_test\.go:[0-9]+: .*(failed over|promoted|took over|followed)' "$log" || true
		if ((rc != 0)); then
			err "the failover tests failed (exit $rc); the end of $log:"
			grep -v 'pool.go:' "$log" | tail -n 150 >&2 || true
		fi
	fi
	((started_s)) && sentinel_down
	((started_c)) && cluster_down
	return "$rc"
}

usage() {
	err "usage: $0 up|down|status [sentinel|cluster] | env | test [go test args...]"
}

main() {
	local cmd="${1:-}" which="${2:-all}"
	case "$which" in all | sentinel | cluster) ;; *) [[ "$cmd" == test ]] || {
		usage
		return 2
	} ;; esac
	case "$cmd" in
	up)
		need_binaries
		[[ "$which" == cluster ]] || sentinel_up
		[[ "$which" == sentinel ]] || cluster_up
		;;
	down)
		[[ "$which" == cluster ]] || sentinel_down
		[[ "$which" == sentinel ]] || cluster_down
		;;
	status)
		local rc=0
		[[ "$which" == cluster ]] || sentinel_status || rc=1
		[[ "$which" == sentinel ]] || cluster_status || rc=1
		return "$rc"
		;;
	env) print_env ;;
	test)
		need_binaries
		shift
		run_tests "$@"
		;;
	-h | --help | help) usage ;;
	*)
		usage
		return 2
		;;
	esac
}

main "$@"

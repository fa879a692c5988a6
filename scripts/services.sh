#!/usr/bin/env bash
# scripts/services.sh — make sure the services warren's tests need answer on localhost.
#
#   bash scripts/services.sh up      start RabbitMQ and Redis when they do not answer, wait for them
#   bash scripts/services.sh check   only check; exit 1 when one of them is down
#
# For each service that does not answer, "up" tries, in this order:
#   1. its local binary (redis-server / rabbitmq-server), when installed;
#   2. `docker compose up -d <service>` with the project's docker-compose.yml, when a Docker
#      engine answers (`docker info`);
#   3. as root on Debian/Ubuntu: `apt-get install -y redis-server|rabbitmq-server`, then 1.;
#   4. otherwise it prints what to install and exits 1.
#
# Environment (defaults in brackets):
#   WARREN_SERVICES_HOST              [127.0.0.1] services are only started when this is loopback
#   WARREN_SERVICES_REDIS_PORT        [6379]
#   WARREN_SERVICES_RABBITMQ_PORT     [5672]  (a non-default port is passed to rabbitmq-server
#                                              as RABBITMQ_NODE_PORT)
#   WARREN_SERVICES_REDIS_TIMEOUT     [30]    seconds to wait for Redis to answer after a start
#   WARREN_SERVICES_RABBITMQ_TIMEOUT  [120]   seconds to wait for RabbitMQ to answer after a start
#   WARREN_SERVICES_NO_INSTALL        [unset] when 1, never apt-get install anything
#   WARREN_SERVICES_NO_DOCKER         [unset] when 1, never use Docker
set -euo pipefail

HOST="${WARREN_SERVICES_HOST:-127.0.0.1}"
REDIS_PORT="${WARREN_SERVICES_REDIS_PORT:-6379}"
RABBITMQ_PORT="${WARREN_SERVICES_RABBITMQ_PORT:-5672}"
REDIS_TIMEOUT="${WARREN_SERVICES_REDIS_TIMEOUT:-30}"
RABBITMQ_TIMEOUT="${WARREN_SERVICES_RABBITMQ_TIMEOUT:-120}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/docker-compose.yml"
TMP="${TMPDIR:-/tmp}"

have() { command -v "$1" >/dev/null 2>&1; }
say() { printf '%s\n' "$*"; }
err() { printf '%s\n' "$*" >&2; }

is_loopback() {
	case "$HOST" in
	127.* | localhost | ::1) return 0 ;;
	*) return 1 ;;
	esac
}

# tcp_probe PORT: something accepts TCP connections on HOST:PORT.
tcp_probe() {
	# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# ---------------------------------------------------------------- Redis

redis_up() {
	local out
	if have redis-cli; then
		out="$(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" || return 1
		[[ "$out" == PONG ]]
	else
		# RESP inline command over bash's /dev/tcp; Redis answers "+PONG\r\n".
		# shellcheck disable=SC2016 # $0/$1/$line expand in the inner bash
		timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
			printf "PING\r\n" >&3
			IFS= read -r line <&3 && [[ "$line" == "+PONG"* ]]' "$HOST" "$REDIS_PORT" 2>/dev/null
	fi
}

redis_wait() {
	local deadline=$((SECONDS + REDIS_TIMEOUT))
	until redis_up; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 1
	done
}

redis_start_local() {
	local log="$TMP/warren-redis-$REDIS_PORT.log"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$TMP" --logfile "$log" >/dev/null
	if ! redis_wait; then
		err "redis: DOWN: started redis-server on port $REDIS_PORT but it did not answer PING within ${REDIS_TIMEOUT}s"
		if [[ -s "$log" ]]; then
			err "redis: last lines of $log:"
			tail -n 20 "$log" >&2 || true
		fi
		return 1
	fi
}

# ---------------------------------------------------------------- RabbitMQ

# amqp_handshake: send the AMQP 0-9-1 protocol header and expect the server's
# Connection.Start method frame (type 1, channel 0, class 10, method 10).
amqp_handshake() {
	local hex
	# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
	hex="$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "AMQP\x00\x00\x09\x01" >&3
		head -c 11 <&3 | od -An -tx1 | tr -d " \n"' "$HOST" "$RABBITMQ_PORT" 2>/dev/null)" || return 1
	[[ "$hex" =~ ^010000[0-9a-f]{8}000a000a$ ]]
}

# rabbitmq_up: TCP probe on the AMQP port, then an AMQP-level check:
# rabbitmq-diagnostics (it checks the local node's listeners, so only for the
# default port on loopback), falling back to the protocol handshake above, which
# also covers a broker in a container or on another port.
rabbitmq_up() {
	tcp_probe "$RABBITMQ_PORT" || return 1
	if have rabbitmq-diagnostics && is_loopback && [[ "$RABBITMQ_PORT" == 5672 ]] &&
		timeout 30 rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
		return 0
	fi
	amqp_handshake
}

rabbitmq_wait() {
	local deadline=$((SECONDS + RABBITMQ_TIMEOUT)) left
	until rabbitmq_up; do
		left=$((deadline - SECONDS))
		if ((left <= 0)); then
			return 1
		fi
		# await_startup blocks until the app has booted; it fails at once while the
		# node itself is not reachable yet, so pace the loop in that case.
		if have rabbitmqctl && ((left > 2)); then
			timeout "$left" rabbitmqctl -q await_startup --timeout "$left" >/dev/null 2>&1 || sleep 2
		else
			sleep 2
		fi
	done
}

rabbitmq_start_local() {
	local how
	if [[ "$RABBITMQ_PORT" != 5672 ]]; then
		export RABBITMQ_NODE_PORT="$RABBITMQ_PORT"
	fi
	if have rabbitmqctl && timeout 30 rabbitmqctl -q ping >/dev/null 2>&1; then
		# The Erlang node runs but AMQP does not answer: the app is stopped or still booting.
		how="started the app of the running node"
		timeout 60 rabbitmqctl -q start_app >/dev/null 2>&1 || true
	else
		how="started rabbitmq-server"
		if ! rabbitmq-server -detached >/dev/null 2>&1; then
			err "rabbitmq: DOWN: 'rabbitmq-server -detached' failed (see /var/log/rabbitmq/)"
			return 1
		fi
	fi
	if ! rabbitmq_wait; then
		err "rabbitmq: DOWN: $how but $HOST:$RABBITMQ_PORT did not answer AMQP within ${RABBITMQ_TIMEOUT}s (see /var/log/rabbitmq/)"
		return 1
	fi
	STARTED_HOW="$how"
}

# ---------------------------------------------------------------- fallbacks

docker_engine() {
	[[ "${WARREN_SERVICES_NO_DOCKER:-}" != 1 ]] && have docker && timeout 15 docker info >/dev/null 2>&1
}

compose() {
	if docker compose version >/dev/null 2>&1; then
		docker compose -f "$COMPOSE_FILE" "$@"
	elif have docker-compose; then
		docker-compose -f "$COMPOSE_FILE" "$@"
	else
		err "docker runs but neither 'docker compose' nor 'docker-compose' is installed"
		return 1
	fi
}

APT_UPDATED=0
can_apt() {
	[[ "${WARREN_SERVICES_NO_INSTALL:-}" != 1 ]] && [[ "$(id -u)" == 0 ]] &&
		have apt-get && [[ -f /etc/debian_version ]]
}

apt_install() {
	local rc=0 policy=/usr/sbin/policy-rc.d made_policy=0
	export DEBIAN_FRONTEND=noninteractive
	if ((APT_UPDATED == 0)); then
		apt-get update -qq || return 1
		APT_UPDATED=1
	fi
	# Keep the packages' maintainer scripts from starting the daemons (there may be
	# no init system); this script starts them itself, the same way every time.
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
	fi
	apt-get install -y -qq --no-install-recommends "$@" || rc=$?
	if ((made_policy)); then
		rm -f "$policy"
	fi
	return "$rc"
}

# ensure NAME BINARY APT_PACKAGE
ensure() {
	local name="$1" bin="$2" pkg="$3" port
	if [[ "$name" == redis ]]; then port="$REDIS_PORT"; else port="$RABBITMQ_PORT"; fi

	if "${name}_up"; then
		say "$name: up (already running on $HOST:$port)"
		return 0
	fi
	if ! is_loopback; then
		err "$name: DOWN: nothing answers on $HOST:$port, and services are only started on loopback"
		return 1
	fi
	if [[ "$name" == redis ]] && tcp_probe "$port"; then
		err "$name: DOWN: port $port is open but does not answer PING (another program holds it?)"
		return 1
	fi

	if have "$bin"; then
		say "$name: not answering on $HOST:$port, starting $bin ..."
		STARTED_HOW="started $bin"
		"${name}_start_local" || return 1
		say "$name: up ($STARTED_HOW on $HOST:$port)"
		return 0
	fi

	if docker_engine; then
		say "$name: $bin not installed, starting it with docker compose ..."
		if ! compose up -d "$name"; then
			err "$name: DOWN: 'docker compose up -d $name' failed"
			return 1
		fi
		if ! "${name}_wait"; then
			err "$name: DOWN: the $name container did not answer on $HOST:$port in time ('docker compose logs $name' tells why)"
			return 1
		fi
		say "$name: up (started with docker compose on $HOST:$port)"
		return 0
	fi

	if can_apt; then
		say "$name: $bin not installed, installing $pkg with apt-get ..."
		if ! apt_install "$pkg"; then
			err "$name: DOWN: 'apt-get install -y $pkg' failed"
			return 1
		fi
		if ! have "$bin"; then
			err "$name: DOWN: installed $pkg but $bin is still not on PATH"
			return 1
		fi
		STARTED_HOW="installed $pkg and started $bin"
		"${name}_start_local" || return 1
		say "$name: up ($STARTED_HOW on $HOST:$port)"
		return 0
	fi

	err "$name: DOWN: nothing answers on $HOST:$port and $bin is not installed."
	err "  Install one of:"
	err "    - the Debian/Ubuntu package:  sudo apt-get install -y $pkg   (then rerun this script)"
	err "    - Docker with the compose plugin, then:  docker compose -f $COMPOSE_FILE up -d $name"
	return 1
}

check() {
	local name="$1" port="$2" what="$3"
	if "${name}_up"; then
		say "$name: up ($HOST:$port)"
	else
		err "$name: DOWN (no $what on $HOST:$port)"
		return 1
	fi
}

usage() {
	err "usage: $0 up|check"
	err "  up     start RabbitMQ ($HOST:$RABBITMQ_PORT) and Redis ($HOST:$REDIS_PORT) when they do not answer"
	err "  check  only check them; exit 1 when one is down"
}

main() {
	local rc=0
	case "${1:-}" in
	up)
		ensure redis redis-server redis-server || rc=1
		ensure rabbitmq rabbitmq-server rabbitmq-server || rc=1
		# warren console reads queue rates from the management API (127.0.0.1:15672); idempotent.
		# Ordered routes need rabbitmq_consistent_hash_exchange (without it their tests start a
		# private node each, which is slower). Both idempotent.
		if is_loopback && have rabbitmq-plugins; then
			rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null || err "rabbitmq: could not enable rabbitmq_management"
			rabbitmq-plugins enable --quiet rabbitmq_consistent_hash_exchange >/dev/null || err "rabbitmq: could not enable rabbitmq_consistent_hash_exchange"
		fi
		;;
	check)
		check redis "$REDIS_PORT" "PONG" || rc=1
		check rabbitmq "$RABBITMQ_PORT" "AMQP" || rc=1
		;;
	-h | --help | help)
		usage
		return 0
		;;
	*)
		usage
		return 2
		;;
	esac
	return "$rc"
}

main "$@"

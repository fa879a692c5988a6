#!/usr/bin/env bash
# scripts/cluster-test.sh — the Cluster tests (internal/clustertest) against a private
# three-node RabbitMQ cluster: starts it, runs the tests, then the fault soak against it
# (TestClusterSoakWithFaults in internal/soak: node kills among the faults, 0 lost), and
# stops it again.
#
#   bash scripts/cluster-test.sh [go test args for internal/clustertest]
#
# Environment (defaults in brackets):
#   WARREN_CLUSTER_VERSION  [4.0]  4.0: the nodes run RabbitMQ 4.0 in the Debian 13 root of
#                                  scripts/rabbitmq4.sh (built when missing); 3.10: the nodes
#                                  run this system's RabbitMQ 3.10. CI uses 4.0: RabbitMQ 3.10.8
#                                  (Debian 12's) can stop dead-lettering from a quorum queue for
#                                  good after a leader change (fixed in later 3.10 releases), which
#                                  the leader-kill test then reports.
#   WARREN_CLUSTER_NAME, WARREN_CLUSTER_PORT  [w4c, 5691 for 4.0]  the nodes' names and first
#                                  AMQP port (see scripts/rabbitmq-cluster.sh), to run beside
#                                  another cluster
#   WARREN_CLUSTER_SOAK     [on]   off: leave the cluster soak out (about 2 minutes).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

case "${WARREN_CLUSTER_VERSION:-4.0}" in
4.0)
	bash "$HERE/rabbitmq4.sh" up >/dev/null # builds the Debian 13 root when missing
	export ERL_EPMD_PORT=4370 WARREN_CLUSTER_ROOT=/var/cache/warren/trixie
	export WARREN_CLUSTER_NAME="${WARREN_CLUSTER_NAME:-w4c}" WARREN_CLUSTER_PORT="${WARREN_CLUSTER_PORT:-5691}"
	export WARREN_TEST_CLUSTER_CTL="env ERL_EPMD_PORT=4370 WARREN_CLUSTER_NAME=$WARREN_CLUSTER_NAME WARREN_CLUSTER_PORT=$WARREN_CLUSTER_PORT WARREN_CLUSTER_ROOT=/var/cache/warren/trixie bash $HERE/rabbitmq-cluster.sh"
	;;
3.10) ;;
*)
	echo "cluster-test: WARREN_CLUSTER_VERSION must be 4.0 or 3.10" >&2
	exit 2
	;;
esac

start=$SECONDS
trap 'bash "$HERE/rabbitmq-cluster.sh" down >/dev/null 2>&1 || true' EXIT
bash "$HERE/rabbitmq-cluster.sh" up
WARREN_TEST_CLUSTER_URLS="$(bash "$HERE/rabbitmq-cluster.sh" urls)"
export WARREN_TEST_CLUSTER_URLS
echo "cluster-test: cluster up after $((SECONDS - start))s"
# -v for the measured FAILOVER and RECOVERY lines; the tests' zap logs are left out.
set +e
go test -race -count=1 -timeout 15m -v "$@" ./internal/clustertest/ 2>&1 | grep -v 'logger.go:'
rc=${PIPESTATUS[0]}
if [[ "${WARREN_CLUSTER_SOAK:-on}" != off ]]; then
	# The soak at CI size (2000 messages); its SOAK lines are the figures.
	WARREN_TEST_CLUSTER_SOAK=1 go test -race -count=1 -timeout 10m -v -run '^TestClusterSoakWithFaults$' ./internal/soak/
	soak_rc=$?
	if [[ $rc == 0 ]]; then
		rc=$soak_rc
	fi
fi
set -e
echo "cluster-test: took $((SECONDS - start))s (rc=$rc)"
exit "$rc"

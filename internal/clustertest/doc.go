// Package clustertest holds warren's tests against a three-node RabbitMQ
// cluster (scripts/rabbitmq-cluster.sh): quorum queues replicated on every
// node, a worker and a publisher that go on through node kills and
// restarts, a worker whose first address is down, and connections that
// come back together after a broker restart. Every test name contains
// "Cluster"; the tests run one after another, since they kill nodes.
//
//	bash scripts/rabbitmq-cluster.sh up
//	WARREN_TEST_CLUSTER_URLS="$(bash scripts/rabbitmq-cluster.sh urls)" \
//		go test -race -count=1 -v ./internal/clustertest/
//
// Without WARREN_TEST_CLUSTER_URLS the tests are skipped, and fail in CI.
package clustertest

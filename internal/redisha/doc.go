// Package redisha holds warren's failover tests against Redis Sentinel and
// Redis Cluster: the dedupe conformance suites on both, and a real worker
// that processes messages while the Redis master fails over (SENTINEL
// FAILOVER, CLUSTER FAILOVER, a killed master). They need the local
// set-ups of scripts/redis-ha.sh and are built only with the redisha tag:
//
//	bash scripts/redis-ha.sh test              # up, run them, stop what it started
//	bash scripts/redis-ha.sh test -run Cluster -v
//
// Without WARREN_TEST_REDIS_SENTINEL_URL and WARREN_TEST_REDIS_CLUSTER_URL
// the tests skip, except under CI=true, where they fail.
package redisha

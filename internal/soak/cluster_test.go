package soak

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
)

// TestClusterSoakWithFaults is the soak against the three-node RabbitMQ
// cluster of scripts/rabbitmq-cluster.sh: the workers and the publisher
// get every node's address (each through a proxy of its own, for the link
// faults), and besides the faults of TestSoakWithFaults the test kills a
// node (SIGKILL) and starts it again, one node at a time, until every node
// was killed at least once. The quorum queues have a member on each node.
// scripts/cluster-test.sh runs it, with WARREN_TEST_CLUSTER_SOAK=1:
//
//	bash scripts/cluster-test.sh -run ClusterSoak
//
// Without WARREN_TEST_CLUSTER_URLS it is skipped (scripts/test.sh runs this
// package without a cluster), unless WARREN_TEST_CLUSTER_SOAK=1 asks for it.
func TestClusterSoakWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	if os.Getenv("WARREN_TEST_CLUSTER_URLS") == "" {
		if os.Getenv("WARREN_TEST_CLUSTER_SOAK") == "1" {
			t.Fatal("WARREN_TEST_CLUSTER_SOAK=1 but WARREN_TEST_CLUSTER_URLS is not set: start the cluster with scripts/rabbitmq-cluster.sh")
		}
		t.Skip("no RabbitMQ cluster (WARREN_TEST_CLUSTER_URLS): scripts/cluster-test.sh runs this test")
	}
	c := testenv.NeedCluster(t)
	for node := 1; node <= 3; node++ {
		c.Start(node) // a no-op on a running node
	}
	t.Cleanup(func() { // leave every node running
		for node := 1; node <= 3; node++ {
			if _, err := c.Do("start", strconv.Itoa(node)); err != nil {
				t.Errorf("starting node %d after the soak: %v", node, err)
			}
		}
	})
	kinds := append(append([]string(nil), faultKinds...), faultNodeKill)
	// A node takes a few seconds to serve again after a kill: give the
	// faults that long more, three times.
	// 50 messages a second (unless -soak.rate says otherwise): the 2000
	// take 40s to publish, long enough for two or three node kills.
	runSoak(t, target{nodes: c.Nodes(), cluster: c, kinds: kinds, minNodeKills: 3, extraTime: 60 * time.Second, rate: 50})
}

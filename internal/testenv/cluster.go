package testenv

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a private three-node RabbitMQ cluster started by
// scripts/rabbitmq-cluster.sh. Tests may kill, stop and start its nodes;
// they must leave every node running when they end.
type Cluster struct {
	t    testing.TB
	urls []string
	ctl  []string
}

// NeedCluster returns the cluster named by WARREN_TEST_CLUSTER_URLS (the
// nodes' addresses, comma-separated, node 1 first, as printed by
// `scripts/rabbitmq-cluster.sh urls`). WARREN_TEST_CLUSTER_CTL is the
// command that controls the nodes; it defaults to that script of this
// repository. Without WARREN_TEST_CLUSTER_URLS the test is skipped, except
// in CI (CI set), where it fails: CI must start the cluster.
func NeedCluster(t testing.TB) *Cluster {
	t.Helper()
	raw := os.Getenv("WARREN_TEST_CLUSTER_URLS")
	if raw == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("WARREN_TEST_CLUSTER_URLS is not set in CI: .ci/run must run `scripts/rabbitmq-cluster.sh up` and export its `urls`")
		}
		t.Skip("no RabbitMQ cluster: run `bash scripts/rabbitmq-cluster.sh up` and set WARREN_TEST_CLUSTER_URLS=\"$(bash scripts/rabbitmq-cluster.sh urls)\"")
	}
	c := &Cluster{t: t}
	for _, u := range strings.Split(raw, ",") {
		c.urls = append(c.urls, strings.TrimSpace(u))
	}
	if len(c.urls) != 3 {
		t.Fatalf("WARREN_TEST_CLUSTER_URLS names %d addresses, want 3", len(c.urls))
	}
	if ctl := os.Getenv("WARREN_TEST_CLUSTER_CTL"); ctl != "" {
		c.ctl = strings.Fields(ctl)
	} else {
		c.ctl = []string{"bash", filepath.Join(repoRoot(t), "scripts", "rabbitmq-cluster.sh")}
	}
	return c
}

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// URL is every node's address, comma-separated, in WARREN_AMQP_URL form.
func (c *Cluster) URL() string { return strings.Join(c.urls, ",") }

// NodeURL is node n's address (n is 1, 2 or 3).
func (c *Cluster) NodeURL(n int) string { return c.urls[n-1] }

// NodeOfAddress returns the node whose address has the port of addr (a URL
// or host:port), or 0.
func (c *Cluster) NodeOfAddress(addr string) int {
	port := func(s string) string {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			return u.Port()
		}
		return s[strings.LastIndex(s, ":")+1:]
	}
	for i, u := range c.urls {
		if port(u) == port(addr) {
			return i + 1
		}
	}
	return 0
}

func (c *Cluster) run(args ...string) []byte {
	c.t.Helper()
	out, err := c.Do(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// Do runs the control command with args (e.g. "kill", "2") and returns its
// output, or an error with its output. Unlike Kill, Stop and Start it
// does not end the test, so it may be called from any goroutine.
func (c *Cluster) Do(args ...string) ([]byte, error) {
	cmd := exec.Command(c.ctl[0], append(append([]string(nil), c.ctl[1:]...), args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s%s", strings.Join(c.ctl, " "), strings.Join(args, " "), err, out, stderr.String())
	}
	return out, nil
}

// Nodes is the cluster's node addresses, node 1 first.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.urls...) }

// Kill ends node n with SIGKILL, a crash, and waits until it is gone.
func (c *Cluster) Kill(n int) { c.t.Helper(); c.run("kill", strconv.Itoa(n)) }

// Stop stops node n cleanly.
func (c *Cluster) Stop(n int) { c.t.Helper(); c.run("stop", strconv.Itoa(n)) }

// Start starts node n and waits until it runs and serves AMQP. It does
// nothing to a running node.
func (c *Cluster) Start(n int) { c.t.Helper(); c.run("start", strconv.Itoa(n)) }

// QueueInfo is what the cluster says about one queue.
type QueueInfo struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
	// Messages counts every message the queue holds, those waiting to
	// be dead-lettered included.
	Messages int `json:"messages"`
}

// Queues lists the queues of the default vhost whose names start with
// prefix.
func (c *Cluster) Queues(prefix string) []QueueInfo {
	c.t.Helper()
	out := c.run("ctl", "list_queues", "name", "type", "leader", "members", "online", "messages", "--formatter", "json")
	var all []QueueInfo
	if err := json.Unmarshal(out, &all); err != nil {
		c.t.Fatalf("list_queues output: %v: %s", err, out)
	}
	var mine []QueueInfo
	for _, q := range all {
		if strings.HasPrefix(q.Name, prefix) {
			mine = append(mine, q)
		}
	}
	return mine
}

// Leader returns the node (1..3) that leads the quorum queue, waiting
// until it has one.
func (c *Cluster) Leader(queue string) int {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, q := range c.Queues(queue) {
			if q.Name == queue {
				if n := NodeNumber(q.Leader); n > 0 {
					return n
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("queue %q has no leader", queue)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// NodeNumber returns N of a node named <name>N@host, or 0.
func NodeNumber(node string) int {
	at := strings.IndexByte(node, '@')
	if at < 1 {
		return 0
	}
	n, err := strconv.Atoi(node[at-1 : at])
	if err != nil {
		return 0
	}
	return n
}

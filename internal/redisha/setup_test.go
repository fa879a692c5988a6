//go:build redisha

package redisha

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/dedupe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// haURL returns the URL in the variable name, skipping t when it is unset
// outside CI and failing it in CI.
func haURL(t *testing.T, name string) string {
	t.Helper()
	u := os.Getenv(name)
	if u != "" {
		return u
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: CI must run these tests through 'bash scripts/redis-ha.sh test'", name)
	}
	t.Skipf("%s is not set; run 'bash scripts/redis-ha.sh test'", name)
	return ""
}

func sentinelURL(t *testing.T) string { return haURL(t, "WARREN_TEST_REDIS_SENTINEL_URL") }
func clusterURL(t *testing.T) string  { return haURL(t, "WARREN_TEST_REDIS_CLUSTER_URL") }

// client connects with url as the worker would (ParseRedisURL) and closes
// the client when t ends.
func client(t *testing.T, url string) redis.UniversalClient {
	t.Helper()
	opts, err := dedupe.ParseRedisURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s does not answer: %v", redactURL(url), err)
	}
	return c
}

func redactURL(u string) string {
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		return "xxxxx@" + u[i+1:]
	}
	return u
}

// deletePrefix deletes every key that starts with prefix when t ends, on
// every master of a cluster.
func deletePrefix(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		del := func(ctx context.Context, n *redis.Client) error {
			iter := n.Scan(ctx, 0, globEscape(prefix)+"*", 500).Iterator()
			for iter.Next(ctx) {
				if err := n.Del(ctx, iter.Val()).Err(); err != nil {
					return err
				}
			}
			return iter.Err()
		}
		var err error
		switch c := c.(type) {
		case *redis.ClusterClient:
			err = c.ForEachMaster(ctx, del)
		case *redis.Client:
			err = del(ctx, c)
		}
		if err != nil {
			t.Errorf("deleting keys %q*: %v", prefix, err)
		}
	})
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]^\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// haScript runs scripts/redis-ha.sh with args and fails t when it fails.
func haScript(t *testing.T, args ...string) {
	t.Helper()
	script := os.Getenv("WARREN_TEST_REDIS_HA_SCRIPT")
	if script == "" {
		script = "../../scripts/redis-ha.sh"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-ha.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("redis-ha.sh %s:\n%s", strings.Join(args, " "), out)
}

// waitFor polls cond every 50ms until it holds, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

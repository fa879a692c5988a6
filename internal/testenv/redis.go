package testenv

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClient connects to the test Redis (RedisAddr) and closes the
// client when t ends. It fails t when the server does not answer: a test
// that needs Redis must not pass without it.
func RedisClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	return redisClient(t, RedisAddr())
}

func redisClient(t testing.TB, addr string) redis.UniversalClient {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("test redis at %s does not answer (start it, or set WARREN_TEST_REDIS_ADDR): %v", addr, err)
	}
	return c
}

// DeleteRedisPrefix deletes every key that starts with prefix when t ends
// (SCAN + DEL), so that tests sharing one Redis leave nothing behind.
// Register it before anything that writes keys, so that it runs last.
func DeleteRedisPrefix(t testing.TB, c redis.UniversalClient, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := DeleteKeys(ctx, c, prefix)
		if err != nil {
			t.Errorf("deleting redis keys %q*: %v (%d deleted)", prefix, err, n)
		}
	})
}

// DeleteKeys deletes every key that starts with prefix and returns how
// many it deleted.
func DeleteKeys(ctx context.Context, c redis.UniversalClient, prefix string) (int, error) {
	keys, err := Keys(ctx, c, prefix)
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	// One DEL per key (a Cluster client sends each to its node), 500 to
	// a pipeline: a test that wrote many keys is cleaned up in a few
	// round trips, also on a loaded machine.
	n := 0
	for start := 0; start < len(keys); start += 500 {
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys[start:min(start+500, len(keys))] {
				p.Del(ctx, k)
			}
			return nil
		})
		for _, cmd := range cmds {
			if d, ok := cmd.(*redis.IntCmd); ok {
				n += int(d.Val())
			}
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Keys returns every key that starts with prefix (SCAN, never KEYS).
func Keys(ctx context.Context, c redis.UniversalClient, prefix string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, globEscape(prefix)+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// globEscape escapes the glob characters of a SCAN MATCH pattern.
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

// RedisServer is a private redis-server for one test, on a free loopback
// port, without persistence: a test can stop and start it to simulate an
// outage without touching the shared test Redis.
type RedisServer struct {
	t    testing.TB
	port int
	dir  string
	args []string // extra redis-server arguments

	mu  sync.Mutex
	cmd *exec.Cmd
	out *bytes.Buffer
}

// StartRedis starts a private redis-server and stops it when t ends.
// args are extra redis-server arguments, such as "--cluster-enabled",
// "yes".
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed for this test: %v", err)
	}
	s := &RedisServer{t: t, port: freePort(t), dir: t.TempDir(), args: args}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Addr is the server's host:port; it stays the same across restarts.
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL of the server.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a client of the server, closed when t ends.
func (s *RedisServer) Client() redis.UniversalClient {
	s.t.Helper()
	return redisClient(s.t, s.Addr())
}

// Start starts the server (again) on its port and waits until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("redis-server is already running")
	}
	out := &bytes.Buffer{}
	cmd := exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", s.dir}, s.args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.cmd, s.out = cmd, out
	if err := s.waitPing(10 * time.Second); err != nil {
		s.stopLocked()
		s.t.Fatalf("private redis-server on %s does not answer: %v\n%s", s.Addr(), err, out)
	}
}

// Stop kills the server, as a crash would, and waits for it to exit. It
// is safe to call when the server is not running.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *RedisServer) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *RedisServer) waitPing(timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

package dedupe_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/dedupe"
)

// clientLogChild makes the test binary, started again by
// TestRouteClientLogs, dial a Redis that is not there: "routed" with
// dedupe.RouteClientLogs in force, "default" without.
const clientLogChild = "DEDUPE_TEST_CLIENT_LOG_CHILD"

// TestRouteClientLogs: go-redis's connection pool logs a dial failure;
// with RouteClientLogs it becomes a warn entry of the routed zap logger
// and nothing reaches the process's standard output or error. Without
// it, go-redis writes the line to standard error, which shows that the
// check can fail. go-redis's default logger holds the process's stderr
// from its start, so each case runs in a process of its own.
func TestRouteClientLogs(t *testing.T) {
	if mode := os.Getenv(clientLogChild); mode != "" {
		clientLogChildMain(t, mode == "routed")
		return
	}
	t.Parallel()
	for _, mode := range []string{"routed", "default"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRouteClientLogs$", "-test.count=1")
		cmd.Env = append(os.Environ(), clientLogChild+"="+mode)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: the child failed: %v\nstdout:\n%s\nstderr:\n%s", mode, err, stdout.String(), stderr.String())
		}
		switch mode {
		case "routed":
			if !onlyResult(stdout.String()) || stderr.Len() != 0 {
				t.Errorf("routed: the child wrote more than its test result\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
		case "default":
			if !strings.Contains(stderr.String(), "failed to dial") {
				t.Errorf("default: go-redis did not write its dial failure to stderr, so the routed case proves nothing\nstderr:\n%s", stderr.String())
			}
		}
	}
}

func clientLogChildMain(t *testing.T, routed bool) {
	core, logs := observer.New(zapcore.DebugLevel)
	if routed {
		defer dedupe.RouteClientLogs(zap.New(core).With(zap.String("service", "test")))()
	}
	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialerRetries: 2, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatalf("ping %s: no error, want a dial failure", addr)
	}
	if !routed {
		return
	}
	var found bool
	for _, e := range logs.AllUntimed() {
		line, _ := e.ContextMap()["line"].(string)
		if strings.Contains(line, "failed to dial") {
			found = true
			if e.Level != zapcore.WarnLevel || e.ContextMap()["service"] != "test" || e.ContextMap()["client"] != "go-redis" {
				t.Errorf("entry %v %v, want warn with the logger's fields and client=go-redis", e.Level, e.ContextMap())
			}
		}
	}
	if !found {
		t.Errorf("no entry for the dial failure; entries: %v", logs.AllUntimed())
	}
}

// onlyResult reports whether a test binary's output holds nothing but
// its verdict (and a coverage line when built with -cover).
func onlyResult(out string) bool {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "PASS" && !strings.HasPrefix(l, "coverage:") {
			return false
		}
	}
	return true
}

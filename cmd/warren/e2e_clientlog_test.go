package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/warrenmq/warren/internal/testenv"
)

// TestE2EClientLogsAreJSON: with Redis down, go-redis's own lines (its
// connection pool's "failed to dial") reach the worker's output as zap
// JSON entries with the password of the Redis URL nowhere, and no line of
// the output is anything but JSON.
func TestE2EClientLogsAreJSON(t *testing.T) {
	t.Parallel()
	q := queueNames(t, testenv.NewAdmin(t))
	dead := freeAddr(t) // nothing listens there
	e := baseEnv().with("WARREN_DEDUPE", "on",
		"WARREN_REDIS_URL", "redis://:s3cr3tpassw0rd@"+dead+"/0",
		"WARREN_HEALTH_ADDR", freeAddr(t))
	w := startWarren(t, e, "run", "-queue", q, "-exec", "true")
	waitFor(t, settleWait, "go-redis's dial failure in the log", func() bool {
		return strings.Contains(w.stderr.String(), "failed to dial")
	})
	w.stop()
	for _, line := range strings.Split(strings.TrimSpace(w.stderr.String()+w.stdout.String()), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("a line of the output is not JSON: %q", line)
			continue
		}
		if l, _ := entry["line"].(string); strings.Contains(l, "failed to dial") {
			if entry["level"] != "warn" || entry["client"] != "go-redis" {
				t.Errorf("go-redis's line logged as %v, want level warn and client go-redis", entry)
			}
		}
	}
}

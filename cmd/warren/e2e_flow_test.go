package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestE2EFlowFlagErrors: a bad flow-control flag stops `run` before it
// connects, with an error naming the flag.
func TestE2EFlowFlagErrors(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	run := []string{"run", "-queue", "never-declared", "-exec", "true"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-order-partitions", "-2", "-exchange", "x"}, "-order-partitions must be between 1 and"},
		{[]string{"-order-partitions", "5000", "-exchange", "x"}, "-order-partitions must be between 1 and"},
		{[]string{"-order-partitions", "many"}, "-order-partitions"},
		{[]string{"-order-partitions", "4"}, "-order-partitions needs -exchange"},
		{[]string{"-order-partitions", "4", "-exchange", "x", "-binding-key", "k"}, "-binding-key does not apply with -order-partitions"},
		{[]string{"-order-partitions", "4", "-exchange", "x", "-exchange-kind", "direct"}, "-exchange-kind does not apply"},
		{[]string{"-order-partitions", "4", "-exchange", "x", "-order-key", "json:id"}, "-order-key must be"},
		{[]string{"-order-partitions", "4", "-exchange", "x", "-order-key", "header:"}, "-order-key must be"},
		{[]string{"-order-key", "header:k"}, "-order-key needs -order-partitions"},
		{[]string{"-order-overtake"}, "-order-overtake needs -order-partitions"},
		{[]string{"-limit-concurrency", "-1", "-limit-key", "routing-key"}, "-limit-concurrency must be"},
		{[]string{"-limit-rate", "-3", "-limit-key", "routing-key"}, "-limit-rate must be"},
		{[]string{"-limit-rate", "5", "-limit-key", "routing-key"}, "-limit-rate needs a positive -limit-period"},
		{[]string{"-limit-period", "1s"}, "-limit-period needs -limit-rate"},
		{[]string{"-limit-period", "soon"}, "-limit-period"},
		{[]string{"-limit-concurrency", "2"}, "-limit-key is required"},
		{[]string{"-limit-key", "routing-key"}, "-limit-key needs"},
		{[]string{"-limit-concurrency", "2", "-limit-key", "body"}, "-limit-key must be"},
		{[]string{"-limit-concurrency", "2", "-limit-key", "json:"}, "-limit-key must be"},
		{[]string{"-limit-concurrency", "2", "-limit-key", "routing-key", "-order-partitions", "2", "-exchange", "x"}, "cannot be used with -order-partitions"},
		{[]string{"-pause-after", "-5"}, "-pause-after must be"},
		{[]string{"-pause-min-backoff", "-1s"}, "-pause-min-backoff must be"},
		{[]string{"-pause-max-backoff", "-1s"}, "-pause-max-backoff must be"},
		{[]string{"-pause-min-backoff", "2s", "-pause-max-backoff", "1s"}, "-pause-max-backoff (1s) must be at least -pause-min-backoff (2s)"},
		{[]string{"-pause-min-backoff", "2m"}, "-pause-max-backoff (1m0s) must be at least -pause-min-backoff (2m0s)"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			r := warren(t, e, nil, append(run, c.args...)...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("want a non-zero exit and %q in stderr\n%s", c.want, r)
			}
		})
	}
}

// flowQueues deletes, when the test ends, the queues and the exchange of
// an ordered route on queue q with n partitions.
func flowQueues(admin *testenv.Admin, q, exchange string, n int) {
	admin.DeleteExchanges(exchange)
	for i := range n {
		p := worker.PartitionQueue(q, i)
		admin.DeleteQueues(p, retry.DLQ(p), retry.TierQueue(p, tier1), retry.TierQueue(p, tier2))
	}
}

// TestE2EOrderFlags: `run -order-partitions 3 -order-key header:k` keeps
// each key's messages in publish order, also when one of them fails once
// and is retried in place.
func TestE2EOrderFlags(t *testing.T) {
	t.Parallel()
	url := testenv.ConsistentHashURL(t)
	admin := testenv.NewAdminAt(t, url)
	q := queueNames(t, admin)
	x := q + ".x"
	const parts, keys, perKey = 3, 3, 5
	flowQueues(admin, q, x, parts)
	e := baseEnv().with("WARREN_AMQP_URL", url)
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	// Logs "<key> <seq> <attempt>"; k1's message 3 fails its first attempt.
	script := writeScript(t, fmt.Sprintf(`seq=$(cat)
printf '%%s %%s %%s\n' "$WARREN_MSG_HEADER_K" "$seq" "$WARREN_MSG_ATTEMPT" >> '%s'
if [ "$WARREN_MSG_HEADER_K" = k1 ] && [ "$seq" = 3 ] && [ "$WARREN_MSG_ATTEMPT" = 1 ]; then exit 1; fi
exit 0
`, log))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("handler log:\n%s", strings.Join(log.lines(), "\n"))
		}
	})
	w := startRun(t, e, "-queue", q, "-exchange", x, "-exec", script,
		"-order-partitions", fmt.Sprint(parts), "-order-key", "header:k")
	for seq := range perKey {
		for k := range keys {
			admin.Publish(x, "any", amqp.Publishing{
				Headers: amqp.Table{"k": fmt.Sprintf("k%d", k)}, Body: []byte(fmt.Sprint(seq)),
			})
		}
	}
	// Each partition runs one handler at a time, each a process or two:
	// slow on a loaded machine.
	waitFor(t, 6*settleWait, fmt.Sprintf("all %d handler runs", keys*perKey+1), func() bool { return log.count() >= keys*perKey+1 })
	got := map[string][]string{}
	for _, l := range log.lines() {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("bad log line %q", l)
		}
		got[f[0]] = append(got[f[0]], f[1]+"/"+f[2])
	}
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		var want []string
		for seq := range perKey {
			want = append(want, fmt.Sprintf("%d/1", seq))
			if key == "k1" && seq == 3 {
				want = append(want, "3/2") // retried in place, before 4
			}
		}
		if fmt.Sprint(got[key]) != fmt.Sprint(want) {
			t.Errorf("%s handled as %v, want %v", key, got[key], want)
		}
	}
	for i := range parts {
		p := worker.PartitionQueue(q, i)
		if n := admin.Count(p) + admin.Count(retry.DLQ(p)); n != 0 {
			t.Errorf("%s and its dlq hold %d messages, want 0", p, n)
		}
	}
	w.stop()
}

// TestE2ELimitFlags: `run -concurrency 4 -limit-concurrency 1 -limit-key
// json:tenant` never runs two handlers of one tenant at once (the
// handler holds a lock directory while it runs), sends the messages over
// the limit round a tier, and handles them all.
func TestE2ELimitFlags(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, rdb, prefix)
	q := queueNames(t, admin)
	e := baseEnv().with("WARREN_REDIS_URL", testenv.RedisURL(), "WARREN_DEDUPE_PREFIX", prefix)
	dir := t.TempDir()
	log := lineLog(filepath.Join(dir, "handled.log"))
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
tenant=$(printf '%%s' "$body" | sed 's/.*"tenant":"\([^"]*\)".*/\1/')
if ! mkdir '%[1]s'/lock-"$tenant" 2>/dev/null; then echo "overlap $tenant" >> '%[2]s'; fi
sleep 0.2
rmdir '%[1]s'/lock-"$tenant" 2>/dev/null
echo "done $WARREN_MSG_MESSAGE_ID" >> '%[2]s'
`, dir, log))
	w := startRun(t, e, "-queue", q, "-exec", script, "-concurrency", "4",
		"-limit-concurrency", "1", "-limit-key", "json:tenant")
	const n = 6
	var ps []amqp.Publishing
	for i := range n {
		ps = append(ps, amqp.Publishing{MessageId: fmt.Sprintf("m%d", i),
			Body: fmt.Appendf(nil, `{"tenant":"t%d","i":%d}`, i%2, i)})
	}
	admin.PublishBatch("", q, ps)
	waitFor(t, settleWait, "every message handled", func() bool { return log.count() >= n })
	for _, l := range log.lines() {
		if strings.HasPrefix(l, "overlap") {
			t.Errorf("two handlers of one tenant ran at once: %s", l)
		}
	}
	series := fmt.Sprintf(`warren_limited_total{limit="concurrency",queue=%q}`, q)
	if v := w.metric(series); v < 1 {
		t.Errorf("%s = %v, want at least 1: four handlers for two tenants, one each", series, v)
	}
	w.stop()
}

// TestE2EExecUnavailable: an exec handler's exit 75 is
// worker.Unavailable: the route pauses, the message goes back without
// spending an attempt, and after -pause-min-backoff a trial message
// (which now succeeds) resumes the route.
func TestE2EExecUnavailable(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	flag := filepath.Join(t.TempDir(), "down-once")
	script := writeScript(t, fmt.Sprintf(`cat >/dev/null
echo "$WARREN_MSG_MESSAGE_ID $WARREN_MSG_ATTEMPT" >> '%[1]s'
if [ ! -e '%[2]s' ]; then : > '%[2]s'; echo "database down" >&2; exit 75; fi
`, log, flag))
	w := startRun(t, e, "-queue", q, "-exec", script, "-concurrency", "1",
		"-pause-min-backoff", "100ms", "-pause-max-backoff", "200ms")
	publish(t, e, q, "m-1", "x")
	waitFor(t, settleWait, "the message handled after the pause", func() bool { return log.count() == 2 })
	if got := strings.Join(log.lines(), "|"); got != "m-1 1|m-1 1" {
		t.Errorf("handler runs %q, want the message twice at attempt 1 (Unavailable spends none)", got)
	}
	series := fmt.Sprintf(`warren_route_pauses_total{queue=%q}`, q)
	waitFor(t, settleWait, series+" to be 1", func() bool { return w.metric(series) == 1 })
	if got := admin.Counts(q, retry.DLQ(q)); fmt.Sprint(got) != "[0 0]" {
		t.Errorf("queue and dlq hold %v, want [0 0]", got)
	}
	w.stop()
}

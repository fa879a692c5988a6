package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// outcomeScript is the exec handler of the tests: it logs
// "<message id> <attempt> <body>" and exits 0 for "ok", 65 (permanent)
// for "bad", and for "flaky" 1 on attempt 1 and 0 after.
func outcomeScript(t testing.TB) (script string, log lineLog) {
	log = lineLog(filepath.Join(t.TempDir(), "handled.log"))
	script = writeScript(t, fmt.Sprintf(`body=$(cat)
printf '%%s %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" "$body" >> '%s'
case "$body" in
ok) exit 0 ;;
bad) echo "cannot handle a bad body" >&2; exit 65 ;;
flaky) if [ "$WARREN_MSG_ATTEMPT" = 1 ]; then echo "flaky the first time" >&2; exit 1; fi; exit 0 ;;
esac
echo "unexpected body" >&2
exit 1
`, log))
	return script, log
}

// TestE2EExecBridge: `run -exec` acks on exit 0, retries on exit 1 and
// dead-letters on exit 65, on quorum queues.
func TestE2EExecBridge(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv().with("WARREN_QUEUE_TYPE", "quorum")
	script, log := outcomeScript(t)
	w := startRun(t, e, "-queue", q, "-exec", script)

	for _, m := range [][2]string{{"m-ok", "ok"}, {"m-flaky", "flaky"}, {"m-bad", "bad"}} {
		publish(t, e, q, m[0], m[1])
	}
	want := []string{"m-ok 1 ok", "m-flaky 1 flaky", "m-flaky 2 flaky", "m-bad 1 bad"}
	waitFor(t, settleWait, "every handler run and the dead letter", func() bool {
		for _, l := range want {
			if log.has(l) == 0 {
				return false
			}
		}
		return admin.Count(retry.DLQ(q)) == 1
	})
	stays(t, quietWindow, "the handler log", len(want), log.count)
	for _, l := range want {
		if n := log.has(l); n != 1 {
			t.Errorf("handler ran %d times as %q, want once; log:\n%s", n, l, strings.Join(log.lines(), "\n"))
		}
	}
	for _, name := range []string{q, retry.TierQueue(q, tier1), retry.TierQueue(q, tier2)} {
		if n := admin.Count(name); n != 0 {
			t.Errorf("%s holds %d messages, want 0", name, n)
		}
	}
	if n := admin.Count(retry.DLQ(q)); n != 1 {
		t.Fatalf("%s holds %d messages, want 1", retry.DLQ(q), n)
	}
	d, ok := admin.Get(retry.DLQ(q))
	if !ok {
		t.Fatal("the dead letter is gone")
	}
	if d.MessageId != "m-bad" || string(d.Body) != "bad" {
		t.Errorf("dead letter is %q %q, want m-bad bad", d.MessageId, d.Body)
	}
	if got := d.Headers[worker.HeaderDeadLetterReason]; got != worker.KindPermanent {
		t.Errorf("%s = %v, want %q", worker.HeaderDeadLetterReason, got, worker.KindPermanent)
	}
	if got, _ := d.Headers[worker.HeaderError].(string); !strings.Contains(got, "exited with 65") || !strings.Contains(got, "cannot handle a bad body") {
		t.Errorf("%s = %q, want the exit code and the script's stderr", worker.HeaderError, got)
	}
	w.stop()
}

// TestE2EExecDedupe: with WARREN_DEDUPE=on a second message with the same
// id is acked as a duplicate without running the command again.
func TestE2EExecDedupe(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, rdb, prefix)
	q := queueNames(t, admin)
	e := baseEnv().with("WARREN_DEDUPE", "on", "WARREN_REDIS_URL", testenv.RedisURL(), "WARREN_DEDUPE_PREFIX", prefix)
	script, log := outcomeScript(t)
	w := startRun(t, e, "-queue", q, "-exec", script)

	publish(t, e, q, "m-same", "ok")
	waitFor(t, settleWait, "the first run", func() bool { return log.has("m-same 1 ok") == 1 })
	publish(t, e, q, "m-same", "ok")
	series := fmt.Sprintf(`warren_duplicates_total{queue=%q}`, q)
	waitFor(t, settleWait, "the duplicate to be counted", func() bool { return w.metric(series) == 1 })
	stays(t, quietWindow, "the handler log", 1, log.count)
	if n := admin.Count(q); n != 0 {
		t.Errorf("%s holds %d messages, want 0", q, n)
	}
	w.stop()
}

// slowScript logs "start <id> <attempt>" and "end <id> <attempt>" around
// a `sleep` that runs as a child process of the script, as any real
// handler's child would, on the first attempt of a message with body
// "slow"; other messages end at once.
func slowScript(t testing.TB, seconds int) (string, lineLog) {
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
printf 'start %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" >> '%[1]s'
if [ "$body" = slow ] && [ "$WARREN_MSG_ATTEMPT" = 1 ]; then
	sleep %[2]d
fi
printf 'end %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" >> '%[1]s'
`, log, seconds))
	return script, log
}

// TestE2EExecDrain: SIGTERM while a handler runs stops consuming,
// returns the prefetched message to the queue, waits for the handler,
// acks its message and exits 0.
func TestE2EExecDrain(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	log := lineLog(filepath.Join(dir, "handled.log"))
	// "hold" runs until the test creates the release file (20s at most).
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
printf 'start %%s\n' "$WARREN_MSG_MESSAGE_ID" >> '%[1]s'
if [ "$body" = hold ]; then
	i=0
	while [ ! -e '%[2]s' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
fi
printf 'end %%s\n' "$WARREN_MSG_MESSAGE_ID" >> '%[1]s'
`, log, release))
	w := startRun(t, e, "-queue", q, "-exec", script, "-concurrency", "1")
	publish(t, e, q, "m-hold", "hold")
	publish(t, e, q, "m-next", "ok")
	waitFor(t, settleWait, "the held handler to start", func() bool { return log.has("start m-hold") == 1 })
	w.terminate()
	waitFor(t, settleWait, "the consumer to stop", func() bool { return strings.Contains(w.stderr.String(), "consumer stopped") })
	// The prefetched message is back in the queue while the handler runs.
	waitFor(t, settleWait, "m-next back in the queue", func() bool { return admin.Count(q) == 1 })
	stays(t, 300*time.Millisecond, "whether warren exited while its handler runs", false, w.exited)
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.waitExit()
	if got := strings.Join(log.lines(), "|"); got != "start m-hold|end m-hold" {
		t.Errorf("handler log %q, want the held message to finish and no other to start", got)
	}
	if got := admin.Counts(q, retry.DLQ(q), retry.TierQueue(q, tier1), retry.TierQueue(q, tier2)); fmt.Sprint(got) != "[1 0 0 0]" {
		t.Errorf("queue, dlq, tiers hold %v, want [1 0 0 0]: the held one acked, the prefetched one back", got)
	}
	if d, ok := admin.Get(q); !ok || d.MessageId != "m-next" {
		t.Errorf("left in the queue: %q, want m-next", d.MessageId)
	}
}

// TestE2EExecTimeout: the handler timeout and the shutdown timeout stop
// a command on time even when it has a child process.
func TestE2EExecTimeout(t *testing.T) {
	t.Parallel()
	const sleep = 20 // seconds the script's child sleeps

	t.Run("handler timeout", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		e := baseEnv()
		script, log := slowScript(t, sleep)
		// 3s: on a loaded machine starting the guard and the shell took
		// over 1s, and a second attempt that sleeps nothing timed out too.
		w := startRun(t, e, "-queue", q, "-exec", script, "-timeout", "3s")
		publish(t, e, q, "m-slow", "slow")
		waitFor(t, settleWait, "the first attempt", func() bool { return log.has("start m-slow 1") == 1 })
		start := time.Now()
		waitFor(t, 2*sleep*time.Second, "the retry", func() bool { return log.has("end m-slow 2") == 1 })
		// 3s timeout + the 200ms tier + the second attempt + slack, well
		// short of the child's sleep.
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("with -timeout 3s the retry came %s after the first attempt started: the timeout waited for the script's child (sleep %ds)", took.Round(100*time.Millisecond), sleep)
		}
		w.stop()
	})

	t.Run("shutdown timeout", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		e := baseEnv().with("WARREN_SHUTDOWN_TIMEOUT", "1s")
		script, log := slowScript(t, sleep)
		w := startRun(t, e, "-queue", q, "-exec", script)
		publish(t, e, q, "m-slow", "slow")
		waitFor(t, settleWait, "the first attempt", func() bool { return log.has("start m-slow 1") == 1 })
		start := time.Now()
		w.stop()
		if took := time.Since(start); took > 4500*time.Millisecond {
			t.Errorf("with WARREN_SHUTDOWN_TIMEOUT=1s the worker took %s to exit after SIGTERM: the cancelled handler waited for the script's child (sleep %ds)", took.Round(100*time.Millisecond), sleep)
		}
		// The cancelled message is not lost: it waits in a tier or the queue.
		waitFor(t, settleWait, "the message back in the queue", func() bool { return admin.Count(q) == 1 })
	})
}

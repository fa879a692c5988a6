//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// Timings of TestE2EKilledWorkerHandsOver.
const (
	// killedWork is how long a handler on the worker that is killed
	// works before its effect: far longer than the test takes to kill it,
	// whatever the machine's load.
	killedWork = 60 * time.Second
	// survivorWork is how long a handler on the other worker works.
	survivorWork = 3 * time.Second
	// handOverTarget is the promise of the issue: with the default lease
	// (3s) and first tier (1s), a message in flight on a SIGKILLed worker
	// runs again elsewhere within 5s of the kill.
	handOverTarget = 5 * time.Second
	// startSlack is the time allowed, beyond handOverTarget, for starting
	// a handler's processes (the race-built exec guard, a shell): up to 2s
	// were measured under the load of the whole package's tests.
	startSlack = 3 * time.Second
)

// workerLog is a file the kill test's handler appends to, one line per
// event: "start|effect <worker> <message id> <attempt> <unix nanoseconds>".
type workerLog struct{ lineLog }

// event is one line of a workerLog.
type event struct {
	what, worker, id string
	attempt          int
	at               time.Time
}

func (l workerLog) events(t testing.TB) []event {
	t.Helper()
	var out []event
	for _, line := range l.lines() {
		f := strings.Fields(line)
		if len(f) != 5 {
			t.Fatalf("handler log line %q: want 5 fields", line)
		}
		attempt, err1 := strconv.Atoi(f[3])
		ns, err2 := strconv.ParseInt(f[4], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("handler log line %q: bad attempt or time", line)
		}
		out = append(out, event{what: f[0], worker: f[1], id: f[2], attempt: attempt, at: time.Unix(0, ns)})
	}
	return out
}

// find returns the events of one kind, worker ("" for any) and id ("" for any).
func find(evs []event, what, worker, id string) []event {
	var out []event
	for _, e := range evs {
		if e.what == what && (worker == "" || e.worker == worker) && (id == "" || e.id == id) {
			out = append(out, e)
		}
	}
	return out
}

// killScript is the handler of the kill test: it logs "start", works
// for KILL_TEST_WORK seconds in a child process (sleep), logs "effect"
// and exits 0. KILL_TEST_WORKER names the worker that runs it.
func killScript(t *testing.T) (string, workerLog) {
	t.Helper()
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
printf 'start %%s %%s %%s %%s\n' "$KILL_TEST_WORKER" "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" "$(date +%%s%%N)" >> '%[1]s'
sleep "$KILL_TEST_WORK"
printf 'effect %%s %%s %%s %%s\n' "$KILL_TEST_WORKER" "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" "$(date +%%s%%N)" >> '%[1]s'
`, log))
	return script, workerLog{log}
}

// outcomeLine is a message's outcome as a JSON log of warren run has it.
type outcomeLine struct {
	at        time.Time
	msg       string // "message ack", "message retry", ...
	messageID string
	errorKind string
	delay     time.Duration // of a retry
	took      time.Duration // from the delivery to the outcome
}

// outcomeLines reads them from a JSON log of warren run; zap writes
// durations in milliseconds.
func outcomeLines(stderr string) []outcomeLine {
	var out []outcomeLine
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var l struct {
			Time      time.Time `json:"time"`
			Msg       string    `json:"msg"`
			MessageID string    `json:"message_id"`
			Outcome   string    `json:"outcome"`
			ErrorKind string    `json:"error_kind"`
			Delay     float64   `json:"delay"`
			Duration  float64   `json:"duration"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Outcome == "" {
			continue
		}
		ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		out = append(out, outcomeLine{at: l.Time, msg: l.Msg, messageID: l.MessageID, errorKind: l.ErrorKind,
			delay: ms(l.Delay), took: ms(l.Duration)})
	}
	return out
}

// TestE2EKilledWorkerHandsOver is the check of a killed worker's cost:
// two `run -exec` workers share a queue with dedupe on and the default
// lease and tiers; one is SIGKILLed while its handlers run. None of its
// handler processes is left; each message it had in flight runs again on
// the other worker within 5s of the kill; no effect runs twice but one
// that completed before the kill (the two-writes window of DESIGN.md).
func TestE2EKilledWorkerHandsOver(t *testing.T) {
	t.Parallel()
	killAndHandOver(t, 8, 0)
}

// killAndHandOver runs the kill test with a survivor of the given
// concurrency (and prefetch) and backlog messages ready in the queue at
// the kill.
func killAndHandOver(t *testing.T, survivor, backlog int) {
	const (
		inFlight = 3 // handlers running on the worker that is killed
		others   = 3 // handlers running on the survivor at the kill
	)
	admin := testenv.NewAdmin(t)
	q := testenv.Name(t)
	names := []string{q, retry.DLQ(q)}
	for _, d := range retry.DefaultDelays() {
		names = append(names, retry.TierQueue(q, d))
	}
	admin.DeleteQueues(names...)
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, rdb, prefix)

	base := baseEnv().with("WARREN_DEDUPE", "on", "WARREN_REDIS_URL", testenv.RedisURL(), "WARREN_DEDUPE_PREFIX", prefix,
		"WARREN_LOG_LEVEL", "debug", "WARREN_LOG_FORMAT", "json")
	// The promise is about the defaults: lease, tiers, attempts.
	for _, k := range []string{"WARREN_RETRY_DELAYS", "WARREN_MAX_ATTEMPTS", "WARREN_DEDUPE_LEASE"} {
		delete(base, k)
	}
	script, log := killScript(t)
	markA, markB := markTest(t), markTest(t)

	// Worker A takes exactly what it runs (prefetch = concurrency), so
	// that once it runs inFlight handlers the next messages go to B.
	// Its handlers outlive the default handler timeout (30s), so that a
	// slow set-up (publishing the backlog one `warren publish` at a time
	// took 30s once on a loaded machine) cannot time them out before the
	// kill.
	a := startRun(t, base.with(markEnv, markA, "KILL_TEST_WORKER", "A", "KILL_TEST_WORK", seconds(killedWork), "WARREN_PREFETCH", strconv.Itoa(inFlight)),
		"-queue", q, "-exec", script, "-concurrency", strconv.Itoa(inFlight), "-timeout", (2 * killedWork).String())
	for i := range inFlight {
		publish(t, base, q, fmt.Sprintf("a-%d", i), "work")
	}
	waitFor(t, settleWait, fmt.Sprintf("%d handlers running on worker A", inFlight), func() bool {
		return len(find(log.events(t), "start", "A", "")) == inFlight
	})
	b := startRun(t, base.with(markEnv, markB, "KILL_TEST_WORKER", "B", "KILL_TEST_WORK", seconds(survivorWork), "WARREN_PREFETCH", strconv.Itoa(survivor)),
		"-queue", q, "-exec", script, "-concurrency", strconv.Itoa(survivor))
	for i := range others {
		publish(t, base, q, fmt.Sprintf("b-%d", i), "work")
	}
	waitFor(t, settleWait, fmt.Sprintf("%d handlers running on worker B", others), func() bool {
		return len(find(log.events(t), "start", "B", "")) == others
	})

	for i := range backlog {
		publish(t, base, q, fmt.Sprintf("q-%d", i), "work")
	}
	killedAt := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL worker A: %v", err)
	}
	<-a.done
	waitNoneLeft(t, markA, a, "every handler process of the SIGKILLed worker A to die")

	evs := log.events(t)
	var handed []string // in flight on A at the kill: started, no effect yet
	completed := map[string]bool{}
	for _, e := range find(evs, "start", "A", "") {
		done := find(evs, "effect", "A", e.id)
		if len(done) > 0 && done[0].at.Before(killedAt) {
			completed[e.id] = true
			continue
		}
		handed = append(handed, e.id)
	}
	sort.Strings(handed)
	if len(handed) == 0 {
		t.Fatalf("no handler was in flight on worker A at the kill (its handlers work %s); log:\n%s", killedWork, strings.Join(log.lines(), "\n"))
	}

	// Each of them runs again on B. The wait is generous; the 5s promise
	// is checked on the measured times below.
	all := inFlight + others + backlog
	waitFor(t, settleWait+survivorWork*time.Duration(1+backlog/survivor), "every message's effect, and B's acks of A's messages", func() bool {
		evs = log.events(t)
		acked := map[string]bool{}
		for _, o := range outcomeLines(b.stderr.String()) {
			acked[o.messageID] = acked[o.messageID] || o.msg == "message ack"
		}
		for _, id := range handed {
			if len(find(evs, "effect", "B", id)) == 0 || !acked[id] {
				return false
			}
		}
		return len(find(evs, "effect", "", "")) >= all-len(completed)
	})
	// Two times per message: until warren on B received the copy that
	// it ran (its ack's time less its duration, which counts from the
	// delivery), and until the script's first line on B. The first is
	// warren's hand-over: the redelivery, the in-progress rounds through
	// the first tier while A's lease runs out, the claim. The second adds
	// starting the handler's processes (the exec guard, a shell, date),
	// which under the load of a full test run took up to 2s.
	var worstWarren, worstStart time.Duration
	outcomes := outcomeLines(b.stderr.String())
	for _, id := range handed {
		again := find(evs, "start", "B", id)[0]
		took := again.at.Sub(killedAt)
		worstStart = max(worstStart, took)
		var rounds []string
		received := time.Duration(-1)
		for _, o := range outcomes {
			switch {
			case o.messageID != id:
			case o.errorKind == "in_progress":
				rounds = append(rounds, fmt.Sprintf("+%s(delay %s)", o.at.Sub(killedAt).Round(time.Millisecond), o.delay))
			case o.msg == "message ack":
				received = o.at.Add(-o.took).Sub(killedAt)
			}
		}
		if received < 0 {
			t.Fatalf("%s: worker B logged no ack for it", id)
		}
		worstWarren = max(worstWarren, received)
		t.Logf("%s: in flight on A at the kill; on B: in-progress rounds %s, the copy that ran received +%s, the script started +%s (attempt %d)",
			id, strings.Join(rounds, " "), received.Round(time.Millisecond), took.Round(time.Millisecond), again.attempt)
		if again.attempt != 1 {
			t.Errorf("%s ran again as attempt %d, want 1: a kill or an in-progress round spent an attempt", id, again.attempt)
		}
	}
	// With a backlog, B's window is full of its own messages at the kill
	// (prefetch = its handlers, each busy for survivorWork), so the broker
	// cannot hand it A's messages before those finish; what warren adds
	// must not be more than without a backlog, and no copy may go round a
	// tier to the back of the queue.
	target := handOverTarget
	if backlog > 0 {
		target += survivorWork
		if n := b.metric(fmt.Sprintf(`warren_in_progress_total{queue=%q}`, q)); n != 0 {
			t.Errorf("warren_in_progress_total on B = %v, want 0: a copy of a killed worker's message went round a tier, behind the backlog", n)
		}
	}
	t.Logf("handed over %d messages; the slowest was received by B for its run %s after the kill (target %s), its script started %s after it",
		len(handed), worstWarren.Round(time.Millisecond), target, worstStart.Round(time.Millisecond))
	if worstWarren > target {
		t.Errorf("a message in flight on the killed worker reached the other worker for its run %s after the kill, want within %s (default lease 3s, first tier 1s)",
			worstWarren.Round(time.Millisecond), target)
	}
	if worstStart > target+startSlack {
		t.Errorf("a message in flight on the killed worker started again %s after the kill, want within %s (%s and %s to start the handler's processes)",
			worstStart.Round(time.Millisecond), target+startSlack, target, startSlack)
	}

	// Nothing more runs: redelivered copies of finished messages are
	// duplicates, and no handler of A outlived it.
	series := fmt.Sprintf(`warren_in_progress_total{queue=%q}`, q)
	t.Logf("warren_in_progress_total on B: %v", b.metric(series))
	stays(t, 2*time.Second, "the handler log", len(log.lines()), func() int { return len(log.lines()) })
	evs = log.events(t)
	repeated := 0
	for _, id := range append(append([]string(nil), handed...), slices.Sorted(maps.Keys(completed))...) {
		n := len(find(evs, "effect", "", id))
		switch {
		case n > 1 && completed[id]:
			repeated++ // effect completed before the kill, done mark not stored
		case n != 1:
			t.Errorf("%s: effect ran %d times, want once", id, n)
		}
	}
	var rest []string
	for i := range others {
		rest = append(rest, fmt.Sprintf("b-%d", i))
	}
	for i := range backlog {
		rest = append(rest, fmt.Sprintf("q-%d", i))
	}
	for _, id := range rest {
		if n := len(find(evs, "effect", "", id)); n != 1 {
			t.Errorf("%s (on the survivor): effect ran %d times, want once", id, n)
		}
	}
	if n := len(find(evs, "effect", "A", "")); n != len(completed) {
		t.Errorf("worker A logged %d effects, want %d (those completed before the kill): a handler of A outlived it", n, len(completed))
	}
	t.Logf("effects completed on A before the kill: %d, of them repeated after it (two-writes window): %d", len(completed), repeated)
	if got := admin.Counts(names...); slices.ContainsFunc(got, func(n int) bool { return n != 0 }) {
		t.Errorf("queue, dlq and tiers hold %v messages, want none", got)
	}
	b.stop()
	waitNoneLeft(t, markB, b, "the survivor's handler processes to end")
}

// seconds formats d for sleep(1).
func seconds(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

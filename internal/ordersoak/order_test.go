// Package ordersoak holds the multi-process test of ordered routes
// (worker.Order): three worker processes (./orderworker) share an ordered
// route while one of them is killed, and every key's messages must still
// be handled in publish order, none lost.
//
//	go test -race -count=1 -v ./internal/ordersoak/
//	go test -count=1 -v ./internal/ordersoak/ -order.keys=500 -order.per-key=200
package ordersoak

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

var (
	flagKeys   = flag.Int("order.keys", 100, "ordered: number of ordering keys")
	flagPerKey = flag.Int("order.per-key", 100, "ordered: messages per key")
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	numWorkers = 3
	partitions = 6
	failEvery  = 50 // about 2% of the messages fail their first attempt
	killAt     = 0.3
)

// retryDelays are the route's tiers: an in-place retry waits the first.
var retryDelays = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond}

// TestOrderedFleetWithKill: three worker processes run one ordered route
// of six partitions (single active consumer each). keys×perKey messages,
// each key's numbered 1..perKey in publish order (header seq), are
// published; handlers sleep 0-3ms, about 2% fail their first attempt and
// are retried in place. When about 30% are handled, the process that
// handled most is SIGKILLed: the broker hands its partitions to the
// others, which get its unacked messages back first.
//
// Each key's handled sequence must be 1..perKey in order once the
// replays of the kill are taken out: a message whose handler ran (and
// recorded its seq) in the killed process but whose ack had not reached
// the broker is delivered again, at the head of its partition, so its
// second run comes right after its first, before the key's next message
// (see walk). At most a prefetch (2) of such messages per partition;
// nothing is lost: all partitions, tiers and dead-letter queues are empty
// at the end.
func TestOrderedFleetWithKill(t *testing.T) {
	if testing.Short() {
		t.Skip("ordered fleet: skipped with -short")
	}
	keys, perKey := *flagKeys, *flagPerKey
	total := keys * perKey
	url := testenv.ConsistentHashURL(t)
	name := testenv.Name(t)
	queue, exchange := name, name+".x"
	admin := testenv.NewAdminAt(t, url)
	admin.DeleteExchanges(exchange)
	for i := range partitions {
		p := worker.PartitionQueue(queue, i)
		admin.DeleteQueues(p, retry.DLQ(p))
		for _, d := range retryDelays {
			admin.DeleteQueues(retry.TierQueue(p, d))
		}
	}
	rdb := testenv.RedisClient(t)
	testenv.DeleteRedisPrefix(t, rdb, name)
	bin := testenv.BuildBinary(t, t.TempDir(), "./orderworker")

	start := time.Now()
	logDir := t.TempDir()
	var procs []*proc
	for i := range numWorkers {
		procs = append(procs, startWorker(t, bin, logDir, fmt.Sprintf("w%d", i), []string{
			"WARREN_AMQP_URL=" + url,
			"WARREN_REDIS_URL=" + testenv.RedisURL(),
			"WARREN_QUEUE_TYPE=classic",
			"WARREN_RETRY_DELAYS=20ms,50ms",
			"WARREN_MAX_ATTEMPTS=5",
			"WARREN_DEDUPE=off",
			"WARREN_SHUTDOWN_TIMEOUT=10s",
			"WARREN_LOG_FORMAT=json",
			"ORDER_QUEUE=" + queue,
			"ORDER_EXCHANGE=" + exchange,
			"ORDER_PARTITIONS=" + strconv.Itoa(partitions),
			"ORDER_PREFIX=" + name,
			"ORDER_FAIL_EVERY=" + strconv.Itoa(failEvery),
		}))
	}
	for _, p := range procs {
		p.waitRunning(t, 2*time.Minute)
	}
	t.Logf("ordered: %d workers running after %s", numWorkers, since(start))

	publish(t, url, exchange, keys, perKey)
	t.Logf("ordered: %d messages published after %s", total, since(start))

	ctx := context.Background()
	counter := func(k string) int { n, _ := rdb.Get(ctx, name+":"+k).Int(); return n }
	waitFor(t, 3*time.Minute, "30% of the messages handled", procs, func() bool {
		return counter("handled") >= int(killAt*float64(total))
	})
	victim := procs[0]
	for _, p := range procs[1:] {
		if counter("by:"+p.Name) > counter("by:"+victim.Name) {
			victim = p
		}
	}
	t.Logf("ordered: SIGKILL %s (%d handled of %d) after %s", victim.Name, counter("by:"+victim.Name), counter("handled"), since(start))
	victim.kill()

	var seqs map[string][]int
	waitFor(t, 4*time.Minute, "every message handled", procs, func() bool {
		seqs = handled(t, rdb, name, keys)
		return done(seqs, keys, perKey)
	})
	t.Logf("ordered: every message handled after %s", since(start))
	for _, p := range procs {
		if p != victim {
			p.Term(t, time.Minute)
		}
	}
	seqs = handled(t, rdb, name, keys)
	check(t, seqs, perKey, partitions)
	var left []string
	for i := range partitions {
		p := worker.PartitionQueue(queue, i)
		qs := []string{p, retry.DLQ(p)}
		for _, d := range retryDelays {
			qs = append(qs, retry.TierQueue(p, d))
		}
		for j, n := range admin.Counts(qs...) {
			if n != 0 {
				left = append(left, fmt.Sprintf("%s: %d", qs[j], n))
			}
		}
	}
	if len(left) > 0 {
		t.Errorf("messages left after every key was handled: %v", left)
	}
	if n := counter("failures"); n == 0 {
		t.Errorf("no planned failure happened (one in %d should)", failEvery)
	} else {
		t.Logf("ordered: %d planned first-attempt failures, retried in place", n)
	}
	by := ""
	for _, p := range procs {
		by += fmt.Sprintf(" %s:%d", p.Name, counter("by:"+p.Name))
	}
	t.Logf("ordered: done after %s; handled %d times for %d messages (by process:%s)", since(start), counter("handled"), total, by)
}

// window is how many of a partition's messages can have run without
// their ack reaching the broker: its prefetch (worker.Order gives a
// partition at most 2), since acks are sent a few milliseconds late, in
// batches, and only for a finished prefix of the deliveries.
const window = 2

// check asserts that every key's sequence is 1..perKey in order once the
// replays of the kill are taken out, and that there are at most
// partitions*window replayed runs in all.
func check(t *testing.T, seqs map[string][]int, perKey, partitions int) {
	t.Helper()
	replayed := 0
	for key, s := range seqs {
		n, err := walk(s, perKey)
		replayed += n
		if err != nil {
			t.Errorf("key %s handled in the order %v: %v", key, s, err)
		}
	}
	t.Logf("ordered: %d replayed runs (handled in the killed process, their acks lost)", replayed)
	if replayed > partitions*window {
		t.Errorf("%d replayed runs, want at most %d (%d unacked per partition at the kill)", replayed, partitions*window, window)
	}
}

// walk checks one key's handled sequence s against 1..perKey and returns
// how many runs were replays. The killed process's unacked messages are
// delivered again at the head of their partitions, in order: in a key's
// sequence that is a repeat of a suffix of what it handled so far, at
// most window long, right where it stands (n n, or n n+1 n n+1). In this
// test a partition interleaves many keys, so the repeat is almost always
// a single number run twice: folding runs of one number gives 1..perKey.
// Any other step back, a gap or a missing tail fails.
func walk(s []int, perKey int) (replays int, err error) {
	next, again := 1, 0 // next new number; during a replay, the next repeated one
	for i, v := range s {
		switch {
		case again != 0 && v == again:
			replays, again = replays+1, v+1
		case again != 0:
			return replays, fmt.Errorf("at %d: %d, want %d (a replay stopped half way)", i, v, again)
		case v == next:
			next++
		case v < next && v >= next-window:
			replays, again = replays+1, v+1
		default:
			return replays, fmt.Errorf("at %d: %d, want %d", i, v, next)
		}
		if again == next {
			again = 0
		}
	}
	if next != perKey+1 || again != 0 {
		return replays, fmt.Errorf("ends before %d of %d", next, perKey)
	}
	return replays, nil
}

// done reports whether every key's sequence reached perKey (whether it
// got there in order is check's business).
func done(seqs map[string][]int, keys, perKey int) bool {
	if len(seqs) < keys {
		return false
	}
	for _, s := range seqs {
		if len(s) == 0 || slices.Max(s) < perKey {
			return false
		}
	}
	return true
}

// handled reads every key's recorded sequence.
func handled(t *testing.T, rdb redis.UniversalClient, prefix string, keys int) map[string][]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmds := make(map[string]*redis.StringSliceCmd, keys)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k := range keys {
			key := keyName(k)
			cmds[key] = p.LRange(ctx, prefix+":key:"+key, 0, -1)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the handled sequences: %v", err)
	}
	out := make(map[string][]int, keys)
	for key, c := range cmds {
		for _, v := range c.Val() {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("key %s: bad seq %q", key, v)
			}
			out[key] = append(out[key], n)
		}
	}
	return out
}

func keyName(k int) string { return fmt.Sprintf("k%03d", k) }

// publish sends perKey messages per key, seq 1..perKey, to exchange with
// the key as routing key and headers key and seq, in batches under
// publisher confirms.
func publish(t *testing.T, url, exchange string, keys, perKey int) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("publisher: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("publisher channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var pending []*amqp.DeferredConfirmation
	flush := func() {
		for _, dc := range pending {
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				t.Fatalf("a publish was not confirmed: %v", err)
			}
		}
		pending = pending[:0]
	}
	for seq := 1; seq <= perKey; seq++ {
		for k := range keys {
			key := keyName(k)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent,
				Headers:      amqp.Table{"key": key, "seq": int32(seq)},
				Body:         []byte(key + "/" + strconv.Itoa(seq)),
			})
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			pending = append(pending, dc)
			if len(pending) == 500 {
				flush()
			}
		}
	}
	flush()
}

// ---- worker processes ---------------------------------------------------

// proc is one worker process; it is killed when the test ends.
type proc struct {
	*testenv.Proc
	killed bool
}

func startWorker(t *testing.T, bin, logDir, name string, env []string) *proc {
	t.Helper()
	return &proc{Proc: testenv.StartProc(t, bin, name, logDir, append(env, "ORDER_INSTANCE="+name)...)}
}

// waitRunning waits until p logs that it runs.
func (p *proc) waitRunning(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.LogPath)
		if bytes.Contains(b, []byte(`"msg":"running"`)) {
			return
		}
		if p.Exited() {
			t.Fatalf("%s exited during start-up:\n%s", p.Name, p.Log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running within %s:\n%s", p.Name, timeout, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends p as a crash would.
func (p *proc) kill() {
	p.killed = true
	p.Kill()
}

// waitFor polls cond until it holds; it fails t after timeout, or when a
// worker that was not killed exited.
func waitFor(t *testing.T, timeout time.Duration, what string, procs []*proc, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, p := range procs {
			if !p.killed && p.Exited() {
				t.Fatalf("%s exited by itself while waiting for %s: %v", p.Name, what, p.Err())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func since(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }

// TestWalk: what check accepts as a key's sequence.
func TestWalk(t *testing.T) {
	for _, c := range []struct {
		s       []int
		replays int
		ok      bool
	}{
		{[]int{1, 2, 3, 4}, 0, true},
		{[]int{1, 2, 2, 3, 4}, 1, true},
		{[]int{1, 2, 3, 2, 3, 4}, 2, true},
		{[]int{1, 2, 3, 4, 4}, 1, true},
		{[]int{1, 3, 2, 4}, 0, false},
		{[]int{1, 2, 4}, 0, false},
		{[]int{1, 2, 3}, 0, false},
		{[]int{1, 2, 3, 4, 2, 3, 4}, 0, false}, // a step back longer than the window
		{[]int{1, 2, 3, 2, 4}, 1, false},       // a replay that stops half way
	} {
		n, err := walk(c.s, 4)
		if (err == nil) != c.ok || (c.ok && n != c.replays) {
			t.Errorf("walk(%v) = %d, %v; want ok=%v with %d replays", c.s, n, err, c.ok, c.replays)
		}
	}
}

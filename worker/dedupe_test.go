package worker_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// firstTier is the first retry tier of dedupe tests: in-progress and
// store-unreachable messages go round it without spending an attempt.
const firstTier = 200 * time.Millisecond

// dedupeConfig is testConfig with dedupe on against redisURL, under a key
// prefix of the test's own, and a logger whose entries the test can read
// as well as see in its output.
func dedupeConfig(t *testing.T, redisURL string) (worker.Config, *observer.ObservedLogs) {
	cfg := testConfig(t)
	core, logs := observer.New(zapcore.DebugLevel)
	cfg.Logger = zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	cfg.Dedupe = worker.DedupeOn
	cfg.RedisURL = redisURL
	cfg.DedupePrefix = testenv.Name(t)
	cfg.RetryDelays = []time.Duration{firstTier, time.Second}
	return cfg, logs
}

// sharedRedis returns a client of the shared test Redis and deletes the
// keys under prefix when t ends. Call it before the fixture starts, so
// that the keys are deleted after the worker stopped.
func sharedRedis(t *testing.T, prefix string) redis.UniversalClient {
	c := testenv.RedisClient(t)
	testenv.DeleteRedisPrefix(t, c, prefix)
	return c
}

// seen is one handler call as a dedupe test looks at it.
type seen struct {
	at      time.Time
	attempt int
	id      string
	body    string
	key     string // IdempotencyKey
	headers map[string]any
}

// calls records handler calls on a channel.
type calls struct {
	mu  sync.Mutex
	all []seen
	ch  chan seen
}

func newCalls() *calls { return &calls{ch: make(chan seen, 1000)} }

func (c *calls) record(d *worker.Delivery) {
	s := seen{at: time.Now(), attempt: d.Attempt, id: d.MessageID, body: string(d.Body),
		key: d.IdempotencyKey, headers: maps.Clone(d.Headers)}
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
	c.ch <- s
}

func (c *calls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all)
}

// wait returns the next n calls or fails t after timeout.
func (c *calls) wait(t *testing.T, n int, timeout time.Duration) []seen {
	t.Helper()
	var got []seen
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case s := <-c.ch:
			got = append(got, s)
		case <-deadline:
			t.Fatalf("got %d of %d handler calls in %s", len(got), n, timeout)
		}
	}
	return got
}

// none fails t if a call arrives within d.
func (c *calls) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-c.ch:
		t.Fatalf("unexpected handler call: attempt %d, id %q, body %q", s.attempt, s.id, s.body)
	case <-time.After(d):
	}
}

func (c *calls) handler(fn func(ctx context.Context, d *worker.Delivery) error) worker.Route {
	return worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		c.record(d)
		if fn == nil {
			return nil
		}
		return fn(ctx, d)
	})}
}

// waitLogs waits until at least n entries with message msg were logged.
func waitLogs(t *testing.T, logs *observer.ObservedLogs, msg string, n int, timeout time.Duration) []observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := logs.FilterMessage(msg).All()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q log entries in %s, want %d", len(got), msg, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// retriesOfKind returns the "message retry" entries with error_kind kind.
func retriesOfKind(logs *observer.ObservedLogs, kind string) []observer.LoggedEntry {
	return logs.FilterMessage("message retry").FilterField(zap.String("error_kind", kind)).All()
}

// tiers returns the route's tier queues.
func (f *fixture) tiers(cfg worker.Config) []string {
	var names []string
	for _, d := range cfg.RetryDelays {
		names = append(names, retry.TierQueue(f.queue, d))
	}
	return names
}

// stopEmpty stops the worker (so that nothing is left unacked) and checks
// that the queue, its tiers and its dead-letter queue are empty.
func (f *fixture) stopEmpty(cfg worker.Config) {
	f.t.Helper()
	if err := f.stop(); err != nil {
		f.t.Fatalf("run: %v", err)
	}
	for _, q := range append([]string{f.queue, retry.DLQ(f.queue)}, f.tiers(cfg)...) {
		if n := f.admin.Count(q); n != 0 {
			f.t.Errorf("%s holds %d messages after the worker stopped, want 0", q, n)
		}
	}
}

// wantValue checks the stored value of a dedupe key.
func wantValue(t *testing.T, c redis.UniversalClient, key, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != want {
		t.Fatalf("GET %q = %q, %v; want %q", key, got, err, want)
	}
}

// waitDoneKeys waits until n keys under prefix are marked done.
func waitDoneKeys(t *testing.T, c redis.UniversalClient, prefix string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		keys, err := testenv.Keys(ctx, c, prefix)
		done := 0
		for _, k := range keys {
			if v, _ := c.Get(ctx, k).Result(); v == "d" {
				done++
			}
		}
		cancel()
		if err == nil && done == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d done keys under %q (err %v), want %d", done, prefix, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// throughTier reports whether the broker dead-lettered the delivery from
// the tier queue tier at least once (it expired there and came back).
func throughTier(headers map[string]any, tier string) bool {
	deaths, _ := headers["x-death"].([]any)
	for _, d := range deaths {
		if e, ok := d.(amqp.Table); ok && e["queue"] == tier && e["reason"] == "expired" {
			return true
		}
	}
	return false
}

func TestDedupeSameIDFiveTimesRunsOnce(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	rdb := sharedRedis(t, cfg.DedupePrefix)
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	for range 5 {
		f.publish("", broker.Message{MessageID: "order-1", Body: []byte("x")})
	}
	got := c.wait(t, 1, 10*time.Second)
	if got[0].attempt != 1 {
		t.Fatalf("attempt %d, want 1", got[0].attempt)
	}
	// The other four are acked as duplicates, maybe after going round the
	// first tier while the first one held the claim.
	waitLogs(t, logs, "message duplicate", 4, 10*time.Second)
	c.none(t, 500*time.Millisecond)
	if n := logs.FilterMessage("message duplicate").Len(); n != 4 {
		t.Fatalf("%d duplicates logged, want 4", n)
	}
	wantValue(t, rdb, dedupe.Key(cfg.DedupePrefix, f.queue, "order-1"), "d")
	f.stopEmpty(cfg)
	if n := c.count(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

func TestDedupeRetryThenSuccessEffectOnce(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	rdb := sharedRedis(t, cfg.DedupePrefix)
	effect := cfg.DedupePrefix + ":effect"
	c := newCalls()
	f := newFixture(t, cfg, c.handler(func(ctx context.Context, d *worker.Delivery) error {
		if d.Attempt == 1 {
			return errors.New("transient failure")
		}
		return rdb.Incr(ctx, effect).Err() // the effect, on the success path only
	})).start()

	f.publish("", broker.Message{MessageID: "pay-1", Body: []byte("pay")})
	got := c.wait(t, 2, 10*time.Second)
	if got[0].attempt != 1 || got[1].attempt != 2 {
		t.Fatalf("attempts %d, %d; want 1, 2", got[0].attempt, got[1].attempt)
	}
	key := dedupe.Key(cfg.DedupePrefix, f.queue, "pay-1")
	if got[0].key != key || got[1].key != key {
		t.Fatalf("idempotency keys %q, %q; want %q both times", got[0].key, got[1].key, key)
	}
	waitLogs(t, logs, "message ack", 1, 5*time.Second)
	wantValue(t, rdb, effect, "1")
	wantValue(t, rdb, key, "d")

	// A later republish of the same id is a duplicate.
	f.publish("", broker.Message{MessageID: "pay-1", Body: []byte("pay")})
	waitLogs(t, logs, "message duplicate", 1, 5*time.Second)
	c.none(t, 500*time.Millisecond)
	wantValue(t, rdb, effect, "1")
	f.stopEmpty(cfg)
}

func TestDedupeAbandonedClaimWaitsForLease(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	cfg.HandlerTimeout = 2 * time.Second
	cfg.DedupeLease = 3 * time.Second // extended while the handler runs
	rdb := sharedRedis(t, cfg.DedupePrefix)
	store, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	// A worker took the claim and died: its claim lives until the lease ends.
	const lease = time.Second
	key := dedupe.Key(cfg.DedupePrefix, f.queue, "job-1")
	claimed := time.Now()
	if st, err := store.Claim(context.Background(), key, "worker-that-died", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("foreign claim: %v, %v", st, err)
	}
	f.publish("", broker.Message{MessageID: "job-1", Body: []byte("job")})

	got := c.wait(t, 1, 10*time.Second)[0]
	if waited := got.at.Sub(claimed); waited < lease-50*time.Millisecond {
		t.Fatalf("handler ran %s after the foreign claim of %s: it did not wait for the lease", waited, lease)
	}
	if got.attempt != 1 {
		t.Fatalf("attempt %d, want 1: waiting for a claim must not spend an attempt", got.attempt)
	}
	// It waited parked, holding its delivery, not round a tier to the back
	// of the queue.
	tier := retry.TierQueue(f.queue, firstTier)
	if throughTier(got.headers, tier) {
		t.Fatalf("the message went round %s; x-death %v", tier, got.headers["x-death"])
	}
	if _, ok := got.headers[worker.HeaderError]; ok {
		t.Fatalf("waiting for a claim wrote a failure on the message: %v", got.headers)
	}
	if waits := retriesOfKind(logs, worker.KindInProgress); len(waits) != 0 {
		t.Fatalf("%d in_progress retries logged, want none: the claim was free within a lease", len(waits))
	}
	waitLogs(t, logs, "message ack", 1, 5*time.Second)
	wantValue(t, rdb, key, "d")
	c.none(t, 500*time.Millisecond)
	f.stopEmpty(cfg)
}

func TestDedupeRedisOutageFailsClosed(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t) // private: this test stops it
	cfg, logs := dedupeConfig(t, srv.URL())
	rdb := srv.Client()
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	const n = 20
	for i := range n {
		f.publish("", broker.Message{MessageID: fmt.Sprint("before-", i), Body: []byte("b")})
	}
	c.wait(t, n, 10*time.Second)
	waitDoneKeys(t, rdb, cfg.DedupePrefix, n, 5*time.Second)

	srv.Stop()
	during := map[string]bool{}
	for i := range n {
		id := fmt.Sprint("during-", i)
		during[id] = true
		f.publish("", broker.Message{MessageID: id, Body: []byte("d")})
	}
	// Nothing runs, every message goes round the first tier without
	// spending an attempt, and the worker says it is not ready.
	waitUntil(t, 5*time.Second, func() bool { return !f.w.Ready() })
	waitUntil(t, 10*time.Second, func() bool {
		circled := map[string]bool{}
		for _, e := range retriesOfKind(logs, worker.KindStoreDown) {
			m := e.ContextMap()
			if m["attempt_spent"] != false || m["attempt"] != int64(1) || m["delay"] != firstTier {
				t.Fatalf("store-unreachable retry %v: want attempt 1, not spent, through the first tier", m)
			}
			circled[m["message_id"].(string)] = true
		}
		return len(circled) == n && maps.Equal(circled, during)
	})
	c.none(t, 2*time.Second)
	if f.w.Ready() {
		t.Fatal("ready while the dedupe store is down")
	}
	if got := f.admin.Count(retry.DLQ(f.queue)); got != 0 {
		t.Fatalf("dlq holds %d during the outage, want 0", got)
	}

	srv.Start()
	got := c.wait(t, n, 15*time.Second)
	ran := map[string]bool{}
	for _, s := range got {
		if s.attempt != 1 {
			t.Errorf("message %s ran with attempt %d, want 1", s.id, s.attempt)
		}
		if ran[s.id] {
			t.Errorf("message %s ran twice", s.id)
		}
		ran[s.id] = true
	}
	if !maps.Equal(ran, during) {
		t.Fatalf("ran %v, want %v", slices.Sorted(maps.Keys(ran)), slices.Sorted(maps.Keys(during)))
	}
	waitUntil(t, 5*time.Second, f.w.Ready)
	waitDoneKeys(t, rdb, cfg.DedupePrefix, n, 5*time.Second) // the restarted server lost the first 20
	c.none(t, time.Second)
	f.stopEmpty(cfg)
}

func TestDedupeRedisOutageFailOpen(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	cfg, logs := dedupeConfig(t, srv.URL())
	cfg.DedupeFailOpen = true
	rdb := srv.Client()
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	f.publish("", broker.Message{MessageID: "first", Body: []byte("1")})
	c.wait(t, 1, 10*time.Second)
	waitDoneKeys(t, rdb, cfg.DedupePrefix, 1, 5*time.Second)

	srv.Stop()
	const n = 5
	for i := range n {
		f.publish("", broker.Message{MessageID: fmt.Sprint("open-", i), Body: []byte("o")})
	}
	// Without a store nothing can tell a duplicate: this one runs again.
	f.publish("", broker.Message{MessageID: "first", Body: []byte("1")})
	got := c.wait(t, n+1, 15*time.Second)
	for _, s := range got {
		if s.attempt != 1 {
			t.Errorf("message %s ran with attempt %d, want 1", s.id, s.attempt)
		}
	}
	waitLogs(t, logs, "dedupe store unreachable, processing without a claim", n+1, 5*time.Second)
	waitLogs(t, logs, "message ack", n+2, 5*time.Second)
	c.none(t, 500*time.Millisecond)
	if k := retriesOfKind(logs, worker.KindStoreDown); len(k) != 0 {
		t.Fatalf("fail-open sent %d messages round a tier", len(k))
	}
	f.stopEmpty(cfg)
}

// bodyKey is the key of a message without id: Route.DedupeKey documents
// "nil means its message id, or a hash of the body when it has none".
func bodyKey(cfg worker.Config, queue, body string) string {
	return dedupe.Key(cfg.DedupePrefix, queue, dedupe.BodyKeyID([]byte(body)))
}

func TestDedupeNoMessageIDUsesBodyHash(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	rdb := sharedRedis(t, cfg.DedupePrefix)
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	// worker.Publish fills in a message id; a plain client need not.
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("same body")})
	got := c.wait(t, 1, 10*time.Second)[0]
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("same body")})
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("other body")})
	other := c.wait(t, 1, 10*time.Second)[0]

	if got.id != "" || got.body != "same body" {
		t.Fatalf("first call: id %q, body %q", got.id, got.body)
	}
	if want := bodyKey(cfg, f.queue, "same body"); got.key != want {
		t.Fatalf("idempotency key %q, want %q", got.key, want)
	}
	if want := bodyKey(cfg, f.queue, "other body"); other.body != "other body" || other.key != want {
		t.Fatalf("second call: body %q, key %q; want other body, %q", other.body, other.key, want)
	}
	waitLogs(t, logs, "message duplicate", 1, 5*time.Second)
	c.none(t, 500*time.Millisecond)
	wantValue(t, rdb, bodyKey(cfg, f.queue, "same body"), "d")
	f.stopEmpty(cfg)
}

// A message without id keeps its dedupe key across a retry, as
// Delivery.IdempotencyKey documents ("stable across redeliveries and
// retries of this message").
func TestDedupeNoMessageIDKeyStableAcrossRetry(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	sharedRedis(t, cfg.DedupePrefix)
	c := newCalls()
	f := newFixture(t, cfg, c.handler(func(ctx context.Context, d *worker.Delivery) error {
		if d.Attempt == 1 {
			return errors.New("transient failure")
		}
		return nil
	})).start()

	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("retry me")})
	got := c.wait(t, 2, 10*time.Second)
	want := bodyKey(cfg, f.queue, "retry me")
	if got[0].key != want || got[1].key != want {
		t.Errorf("idempotency keys: attempt 1 %q, attempt 2 %q (message id %q); want %q both times",
			got[0].key, got[1].key, got[1].id, want)
	}
	waitLogs(t, logs, "message ack", 1, 5*time.Second)
	// The same body again is a duplicate of the message that succeeded.
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("retry me")})
	c.none(t, time.Second)
}

// A message without id waits for a live claim on its key like any other.
func TestDedupeNoMessageIDWaitsForForeignClaim(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, testenv.RedisURL())
	rdb := sharedRedis(t, cfg.DedupePrefix)
	store, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCalls()
	f := newFixture(t, cfg, c.handler(nil)).start()

	const lease = 1500 * time.Millisecond
	claimed := time.Now()
	if st, err := store.Claim(context.Background(), bodyKey(cfg, f.queue, "held"), "other-worker", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("foreign claim: %v, %v", st, err)
	}
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("held")})
	got := c.wait(t, 1, 10*time.Second)[0]
	if waited := got.at.Sub(claimed); waited < lease-50*time.Millisecond {
		t.Fatalf("handler ran %s after a foreign claim of %s on the message's key (it ran with id %q, key %q)",
			waited, lease, got.id, got.key)
	}
}

// Readiness is about the store answering: a claim that was lost while
// the handler ran (MarkDone answers ErrNotOwner) is no outage.
func TestDedupeReadyWhenClaimLost(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	rdb := sharedRedis(t, cfg.DedupePrefix)
	c := newCalls()
	f := newFixture(t, cfg, c.handler(func(ctx context.Context, d *worker.Delivery) error {
		return rdb.Del(ctx, d.IdempotencyKey).Err() // as if the lease had expired
	})).start()

	f.publish("", broker.Message{MessageID: "lost-1", Body: []byte("x")})
	c.wait(t, 1, 10*time.Second)
	// The claim was renewed in time: the warning says it was lost, not
	// that it expired, and gives no advice about the lease.
	waitLogs(t, logs, "done mark not stored: the claim was lost with the store (a restart or failover without it) although it was renewed in time; the message may run again", 1, 5*time.Second)
	waitLogs(t, logs, "message ack", 1, 5*time.Second)
	if !f.w.Ready() {
		t.Fatal("not ready after MarkDone answered ErrNotOwner, although the store answers")
	}
}

// TestDedupeCommitWithDoneAppliesWritesOnce: a handler's Redis writes,
// queued with CommitWithDone, are committed with the done mark. A run
// whose claim was lost before the commit applies nothing and the message
// runs again, so the effect lands exactly once.
func TestDedupeCommitWithDoneAppliesWritesOnce(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, "redis://"+testenv.RedisAddr()+"/0")
	rdb := testenv.RedisClient(t)
	var runs atomic.Int32
	steal := make(chan string, 1)
	var effectKey atomic.Value
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		n := runs.Add(1)
		key := worker.RedisKey(ctx, cfg.DedupePrefix+":effect")
		effectKey.Store(key)
		if err := worker.CommitWithDone(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, key)
			return nil
		}); err != nil {
			return err
		}
		if n == 1 {
			// Another owner takes the claim over while this run is
			// finishing, as after a lease expiry.
			rdb.Set(ctx, d.IdempotencyKey, "p:thief", 300*time.Millisecond)
			steal <- d.IdempotencyKey
		}
		return nil
	})}).start()
	f.publish("", broker.Message{MessageID: "m1", Body: []byte("x")})
	<-steal
	waitUntil(t, 15*time.Second, func() bool { return runs.Load() >= 2 })
	waitUntil(t, 10*time.Second, func() bool {
		k, _ := effectKey.Load().(string)
		n, _ := rdb.Get(context.Background(), k).Int()
		return n == 1
	})
	// A re-publish is a duplicate: the effect stays at one.
	f.publish("", broker.Message{MessageID: "m1", Body: []byte("x")})
	time.Sleep(500 * time.Millisecond)
	k := effectKey.Load().(string)
	if n, _ := rdb.Get(context.Background(), k).Int(); n != 1 {
		t.Fatalf("effect applied %d times, want 1", n)
	}
	if r := runs.Load(); r != 2 {
		t.Fatalf("handler ran %d times, want 2 (the lost commit and the one that counted)", r)
	}
}

// TestDedupeCommitWithDoneNeedsStore: without dedupe the handler learns
// that nothing was queued.
func TestDedupeCommitWithDoneNeedsStore(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	f := newFixture(t, testConfig(t), worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		errs <- worker.CommitWithDone(ctx, func(redis.Pipeliner) error { return nil })
		return nil
	})}).start()
	f.publish("", broker.Message{})
	if err := <-errs; !errors.Is(err, worker.ErrNoAtomicStore) {
		t.Fatalf("got %v, want ErrNoAtomicStore", err)
	}
}

// TestDedupeLongHandlerKeepsItsLease: a handler that runs far longer than
// the lease keeps its claim alive, so a copy of the message that arrives
// meanwhile does not run beside it.
func TestDedupeLongHandlerKeepsItsLease(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, testenv.RedisURL())
	sharedRedis(t, cfg.DedupePrefix)
	cfg.DedupeLease = 300 * time.Millisecond
	cfg.HandlerTimeout = 5 * time.Second
	var runs atomic.Int32
	started := make(chan struct{}, 4)
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		runs.Add(1)
		started <- struct{}{}
		time.Sleep(1500 * time.Millisecond) // five leases
		return nil
	})}).start()
	f.publish("", broker.Message{MessageID: "long", Body: []byte("x")})
	<-started
	time.Sleep(700 * time.Millisecond) // the first lease would have expired twice
	f.publish("", broker.Message{MessageID: "long", Body: []byte("x")})
	waitUntil(t, 10*time.Second, func() bool {
		return f.admin.Count(f.queue) == 0 && f.admin.Count(f.queue+".retry.200ms") == 0
	})
	time.Sleep(500 * time.Millisecond)
	if n := runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times: the claim lapsed during the long run", n)
	}
}

// TestWarnsNearConsumerTimeout: a handler timeout close to the broker's
// consumer_timeout is warned about at start.
func TestWarnsNearConsumerTimeout(t *testing.T) {
	t.Parallel()
	cfg, logs := dedupeConfig(t, testenv.RedisURL())
	cfg.Dedupe = worker.DedupeOff
	cfg.HandlerTimeout = 28 * time.Minute
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })}).start()
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("consumer_timeout").Len() == 0 {
		t.Fatal("no warning about the broker's consumer_timeout")
	}
}

// plainStore hides the batch calls of the store it wraps.
type plainStore struct{ dedupe.Store }

// TestDedupeWithAStoreWithoutBatchCalls: a custom store that has only the
// Store methods still marks done (one call at a time) and catches
// duplicates.
func TestDedupeWithAStoreWithoutBatchCalls(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, testenv.RedisURL())
	cfg.Store = plainStore{dedupe.NewMemory()}
	var runs atomic.Int32
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error {
		runs.Add(1)
		return nil
	})}).start()
	for i := 0; i < 3; i++ {
		f.publish("", broker.Message{MessageID: "same", Body: []byte("x")})
	}
	waitUntil(t, 10*time.Second, func() bool { return f.admin.Count(f.queue) == 0 && runs.Load() >= 1 })
	time.Sleep(300 * time.Millisecond)
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times for one message id, want 1", n)
	}
	if n := f.admin.Count(f.queue); n != 0 {
		t.Fatalf("%d messages left", n)
	}
}

// TestDedupeDrainGivesBackClaimedMessages: with dedupe on, the claimer
// claims ahead of the handlers. On a drain, the messages it claimed that
// no handler started go back to the queue at once with their claims
// released, so that they run elsewhere instead of waiting out a lease;
// also when the handlers outlast the shutdown timeout (which cancels the
// handler context).
func TestDedupeDrainGivesBackClaimedMessages(t *testing.T) {
	t.Parallel()
	for name, late := range map[string]bool{"in time": false, "after the shutdown timeout": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, _ := dedupeConfig(t, testenv.RedisURL())
			cfg.Concurrency = 2
			cfg.Prefetch = 20
			work := 300 * time.Millisecond
			if late {
				cfg.ShutdownTimeout = 200 * time.Millisecond
				work = 800 * time.Millisecond
			}
			rc := sharedRedis(t, cfg.DedupePrefix)
			started := make(chan struct{}, 100)
			var finished atomic.Int32
			f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
				started <- struct{}{}
				time.Sleep(work) // ignores ctx, as a handler may
				finished.Add(1)
				return nil
			})}).start()
			const n = 20
			for i := 0; i < n; i++ {
				f.publish("", broker.Message{MessageID: fmt.Sprintf("m-%d", i)})
			}
			<-started
			<-started
			// Let the claimer claim ahead while the first two run.
			time.Sleep(100 * time.Millisecond)
			done := f.stopDrained(n, &finished, 2)
			keys, err := testenv.Keys(context.Background(), rc, cfg.DedupePrefix)
			if err != nil {
				t.Fatal(err)
			}
			vals := map[string]int{}
			for _, k := range keys {
				v, err := rc.Get(context.Background(), k).Result()
				if err != nil {
					t.Fatalf("get %s: %v", k, err)
				}
				vals[v[:1]]++
			}
			if vals["d"] != done || len(keys) != done {
				t.Fatalf("after the drain Redis holds %v (by value kind) in %d keys; want %d done marks and no claims left", vals, len(keys), done)
			}
		})
	}
}

// TestDedupeCancelledHandlerReleasesItsClaim: a handler that the shutdown
// timeout cancels gives its message back to the queue, and its claim is
// released though the handler context has ended, so that the message runs
// elsewhere at once instead of after the lease.
func TestDedupeCancelledHandlerReleasesItsClaim(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, testenv.RedisURL())
	cfg.Concurrency = 1
	cfg.ShutdownTimeout = 200 * time.Millisecond
	rc := sharedRedis(t, cfg.DedupePrefix)
	started := make(chan struct{}, 1)
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})}).start()
	f.publish("", broker.Message{MessageID: "m-1"})
	<-started
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if n := f.admin.WaitCount(f.queue, 1, 5*time.Second); n != 1 {
		t.Fatalf("%d message(s) back in the queue, want 1", n)
	}
	keys, err := testenv.Keys(context.Background(), rc, cfg.DedupePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("Redis still holds %v after the drain; want the claim released", keys)
	}
}

// TestDedupeCommitWithDoneErrors: an error of the handler's own writes
// function is a handler failure (a retry), not a store outage (a requeue
// at once, without spending an attempt, again and again); a write that
// fails inside the commit leaves the message done, and it is acked.
func TestDedupeCommitWithDoneErrors(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, rdb, prefix) })
	store, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	calls := 0
	invalid := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		return worker.CommitWithDone(ctx, func(redis.Pipeliner) error {
			calls++
			return errors.New("invalid amount")
		})
	})
	d := &worker.Delivery{IdempotencyKey: dedupe.Key(prefix, "q", "m1"), Attempt: 1, MaxAttempts: 3}
	ex := worker.Execute(ctx, invalid, d, worker.ExecuteOptions{Store: store})
	if ex.Outcome != worker.OutcomeRetry || calls != 1 {
		t.Fatalf("a writes function error: %s (%s) after %d calls, want a retry after 1 call: %v", ex.Outcome, ex.Kind, calls, ex.Err)
	}

	key := dedupe.Key(prefix, "q", "m2")
	hash := dedupe.SameSlot(key, prefix+":hash")
	rdb.HSet(ctx, hash, "f", "v")
	wrongType := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		return worker.CommitWithDone(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, hash) // fails when EXEC runs it
			return nil
		})
	})
	d = &worker.Delivery{IdempotencyKey: key, Attempt: 1, MaxAttempts: 3}
	if ex := worker.Execute(ctx, wrongType, d, worker.ExecuteOptions{Store: store}); ex.Outcome != worker.OutcomeAck {
		t.Fatalf("a write failing in the commit: %s (%s), want an ack: the done mark committed: %v", ex.Outcome, ex.Kind, ex.Err)
	}
}

package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// limitedCount is warren_limited_total for queue and limit.
func limitedCount(t *testing.T, reg *prometheus.Registry, queue, over string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "warren_limited_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == queue && labels["limit"] == over {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

// limitConfig is testConfig with a Redis prefix of the test's own.
func limitConfig(t *testing.T) worker.Config {
	cfg := testConfig(t)
	cfg.RedisURL = "redis://" + testenv.RedisAddr() + "/0"
	cfg.DedupePrefix = testenv.Name(t)
	testenv.DeleteRedisPrefix(t, testenv.RedisClient(t), cfg.DedupePrefix)
	return cfg
}

// runWorker runs another worker with route r until the test ends.
func runWorker(t *testing.T, cfg worker.Config, r worker.Route) *worker.Worker {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second worker: %v", err)
		}
	})
	waitUntil(t, 20*time.Second, w.Ready)
	return w
}

func keyHeader(d *worker.Delivery) string { s, _ := d.Headers["k"].(string); return s }

// TestLimitConcurrencyPerKeyAcrossWorkers: two workers, four handlers
// each, a limit of two per key: a key never has more than two handlers
// at once across both, a message over the limit waits on a tier without
// spending an attempt (counted in warren_limited_total), and another
// key's messages run meanwhile.
func TestLimitConcurrencyPerKeyAcrossWorkers(t *testing.T) {
	t.Parallel()
	var (
		inHot, maxHot atomic.Int32
		release       = make(chan struct{})
		mu            sync.Mutex
		done          = map[string]int{} // message id -> attempt it succeeded on
		coldDone      atomic.Int32
	)
	cfg := limitConfig(t)
	route := worker.Route{
		Queue: ".q", Concurrency: 4, Prefetch: 8,
		Retry:  retry.Policy{MaxAttempts: 2},
		Limits: worker.Limits{Key: keyHeader, Concurrency: 2},
		Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			if keyHeader(d) == "hot" {
				now := inHot.Add(1)
				for m := maxHot.Load(); now > m && !maxHot.CompareAndSwap(m, now); m = maxHot.Load() {
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
				inHot.Add(-1)
			} else {
				coldDone.Add(1)
			}
			mu.Lock()
			done[d.MessageID] = d.Attempt
			mu.Unlock()
			return nil
		}),
	}
	f := newFixture(t, cfg, route).start()
	q := f.queue + ".q"
	second := route
	second.Queue = q
	w2 := runWorker(t, cfg, second)
	const hot, cold = 6, 4
	for i := range hot {
		f.publish(".q", broker.Message{MessageID: fmt.Sprintf("hot-%d", i), Headers: map[string]any{"k": "hot"}})
	}
	for i := range cold {
		f.publish(".q", broker.Message{MessageID: fmt.Sprintf("cold-%d", i), Headers: map[string]any{"k": "cold"}})
	}
	limited := func() float64 {
		return limitedCount(t, f.w.Registry(), q, "concurrency") + limitedCount(t, w2.Registry(), q, "concurrency")
	}
	// Two hot handlers hold their slots; the other hot messages are
	// refused and go round the tier; cold ones all run meanwhile.
	waitUntil(t, 30*time.Second, func() bool { return inHot.Load() == 2 && coldDone.Load() == cold && limited() >= 2 })
	close(release)
	waitUntil(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == hot+cold
	})
	if m := maxHot.Load(); m != 2 {
		t.Fatalf("key hot had up to %d handlers at once across the workers, limit 2", m)
	}
	mu.Lock()
	for id, attempt := range done {
		if attempt != 1 {
			t.Errorf("%s succeeded on attempt %d: a refusal spent an attempt", id, attempt)
		}
	}
	mu.Unlock()
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters", got)
	}
}

// TestLimitRatePerKey: at most Rate handlers start per Period for a key.
// Redis decides on its own clock; each decision came after the messages
// were published and before its handler started, so the k-th start
// (from 0) is at least floor(k/Rate) periods after the publishing began.
func TestLimitRatePerKey(t *testing.T) {
	t.Parallel()
	const rate, n = 2, 7
	period := time.Second
	var (
		mu     sync.Mutex
		starts []time.Time
	)
	f := newFixture(t, limitConfig(t), worker.Route{
		Queue: ".q", Concurrency: 4, Prefetch: 8,
		Retry:  retry.Policy{MaxAttempts: 2},
		Limits: worker.Limits{Key: keyHeader, Rate: rate, Period: period},
		Handler: worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			if d.Attempt != 1 {
				return worker.Permanent(fmt.Errorf("attempt %d: a refusal spent an attempt", d.Attempt))
			}
			return nil
		}),
	}).start()
	q := f.queue + ".q"
	t0 := time.Now()
	for i := range n {
		f.publish(".q", broker.Message{MessageID: fmt.Sprintf("m%d", i), Headers: map[string]any{"k": "one"}})
	}
	waitUntil(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(starts) == n
	})
	mu.Lock()
	got := slices.Clone(starts)
	mu.Unlock()
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	for k, s := range got {
		if least := time.Duration(k/rate) * period; s.Sub(t0) < least {
			t.Fatalf("start %d came %s after publishing began, want at least %s (rate %d per %s)", k, s.Sub(t0), least, rate, period)
		}
	}
	if v := limitedCount(t, f.w.Registry(), q, "rate"); v < 1 {
		t.Fatalf("warren_limited_total{limit=rate} = %v", v)
	}
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters", got)
	}
}

// TestLimitKeyPanicDeadLetters: a Limits.Key that panics on a message
// dead-letters that message, kind panic, without running its handler;
// the worker goes on with the others.
func TestLimitKeyPanicDeadLetters(t *testing.T) {
	t.Parallel()
	var ran atomic.Int32
	f := newFixture(t, limitConfig(t), worker.Route{
		Queue: ".q", Concurrency: 2,
		Limits: worker.Limits{Key: func(d *worker.Delivery) string {
			return keyHeader(d)[:3] // panics on a key shorter than 3
		}, Concurrency: 1},
		Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { ran.Add(1); return nil }),
	}).start()
	q := f.queue + ".q"
	f.publish(".q", broker.Message{MessageID: "short", Headers: map[string]any{"k": "x"}})
	f.publish(".q", broker.Message{MessageID: "fine", Headers: map[string]any{"k": "long-enough"}})
	if got := f.admin.WaitCount(retry.DLQ(q), 1, 20*time.Second); got != 1 {
		t.Fatalf("%s holds %d, want 1", retry.DLQ(q), got)
	}
	waitUntil(t, 20*time.Second, func() bool { return ran.Load() == 1 })
	d, ok := f.admin.Get(retry.DLQ(q))
	if !ok || d.MessageId != "short" || d.Headers[worker.HeaderErrorKind] != worker.KindPanic {
		t.Fatalf("dead letter %q of kind %v, want short of kind panic", d.MessageId, d.Headers[worker.HeaderErrorKind])
	}
	if e, _ := d.Headers[worker.HeaderError].(string); !strings.Contains(e, "Limits.Key panicked") {
		t.Fatalf("dead letter error %q", e)
	}
}

// TestLimitRateSkipsKnownDuplicates: a duplicate that intake finds done
// does not run, and does not use up its key's rate: the key's next
// message runs at once.
func TestLimitRateSkipsKnownDuplicates(t *testing.T) {
	t.Parallel()
	cfg := limitConfig(t)
	cfg.Dedupe = worker.DedupeOn
	var ran atomic.Int32
	f := newFixture(t, cfg, worker.Route{
		Queue: ".q", Concurrency: 1, Prefetch: 1,
		Limits:  worker.Limits{Key: keyHeader, Rate: 2, Period: time.Hour},
		Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { ran.Add(1); return nil }),
	}).start()
	q := f.queue + ".q"
	one := map[string]any{"k": "one"}
	f.publish(".q", broker.Message{MessageID: "m1", Headers: one})
	waitUntil(t, 20*time.Second, func() bool { return ran.Load() == 1 })
	f.publish(".q", broker.Message{MessageID: "m1", Headers: one}) // a duplicate
	f.publish(".q", broker.Message{MessageID: "m2", Headers: one})
	waitUntil(t, 20*time.Second, func() bool { return ran.Load() == 2 })
	if v := limitedCount(t, f.w.Registry(), q, "rate"); v != 0 {
		t.Fatalf("warren_limited_total{limit=rate} = %v, want 0: the duplicate used up the rate", v)
	}
}

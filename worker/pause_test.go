package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestPauseOnUnavailable: a handler that says its dependency is down
// pauses the route: the subscription is cancelled, the messages it held
// go back and stay ready in the queue with no attempt spent, no handler
// runs while probes fail, and the route resumes by itself once the probe
// succeeds; readiness and metrics show the pause. The same holds with
// dedupe on, where the messages given back had been claimed.
func TestPauseOnUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("dedupe-off", func(t *testing.T) { t.Parallel(); testPauseOnUnavailable(t, testConfig(t)) })
	t.Run("dedupe-on", func(t *testing.T) {
		t.Parallel()
		cfg, _ := dedupeConfig(t, "redis://"+testenv.RedisAddr()+"/0")
		sharedRedis(t, cfg.DedupePrefix)
		testPauseOnUnavailable(t, cfg)
	})
}

func testPauseOnUnavailable(t *testing.T, cfg worker.Config) {
	var up atomic.Bool
	var probes atomic.Int32
	rec := newRecorder()
	const n = 6
	f := newFixture(t, cfg, worker.Route{
		Queue: ".q", Concurrency: 1, Prefetch: 10,
		Retry: retry.Policy{MaxAttempts: 2},
		Pause: worker.Pause{MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			Probe: func(context.Context) error {
				probes.Add(1)
				if !up.Load() {
					return errors.New("still down")
				}
				return nil
			}},
		Handler: worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
			rec.record(d)
			if !up.Load() {
				return worker.Unavailable(errors.New("database down"))
			}
			return nil
		}),
	}).start()
	q := f.queue + ".q"
	reg := f.w.Registry()
	for i := range n {
		f.publish(".q", broker.Message{MessageID: fmt.Sprintf("m%d", i), Body: []byte("x")})
	}
	first := rec.wait(t, 1, 20*time.Second)[0]
	waitUntil(t, 20*time.Second, func() bool { return testenv.MetricValue(t, reg, "warren_route_paused", q) == 1 })
	// Every message is back in the queue, ready: the held ones requeued,
	// the one that failed through its first tier; none is consumed.
	waitUntil(t, 30*time.Second, func() bool { return f.admin.Count(q) == n })
	waitUntil(t, 30*time.Second, func() bool { return f.admin.TryConsumers(q) == 0 })
	startProbes := probes.Load()
	waitUntil(t, 30*time.Second, func() bool { return probes.Load() >= startProbes+2 })
	if got := rec.count(); got != 1 {
		t.Fatalf("%d handler calls while paused, want only the first", got)
	}
	if f.w.Ready() {
		t.Fatal("ready while a route is paused")
	}
	if got := f.admin.Count(q); got != n {
		t.Fatalf("%d messages ready while paused, want %d", got, n)
	}

	up.Store(true)
	calls := rec.wait(t, n, 30*time.Second)
	seen := map[string]bool{}
	for _, c := range calls {
		seen[c.id] = true
		if c.attempt != 1 {
			t.Fatalf("message %s ran on attempt %d after the pause, want 1 (no attempt spent)", c.id, c.attempt)
		}
	}
	if len(seen) != n || !seen[first.id] {
		t.Fatalf("after the resume ran %v, want all %d messages", seen, n)
	}
	waitUntil(t, 20*time.Second, f.w.Ready)
	if v := testenv.MetricValue(t, reg, "warren_route_paused", q); v != 0 {
		t.Fatalf("warren_route_paused = %v after the resume", v)
	}
	if v := testenv.MetricValue(t, reg, "warren_route_pauses_total", q); v != 1 {
		t.Fatalf("warren_route_pauses_total = %v, want 1", v)
	}
	if got := f.admin.WaitCount(q, 0, 10*time.Second); got != 0 {
		t.Fatalf("%d messages left", got)
	}
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters", got)
	}
}

// TestPauseAfterConsecutiveFailuresWithTrial: Pause.After consecutive
// failures pause the route; without a probe function the route tries
// one trial message at a time (never two handlers at once while it
// probes), pauses again while trials fail, and resumes when one succeeds.
func TestPauseAfterConsecutiveFailuresWithTrial(t *testing.T) {
	t.Parallel()
	var (
		up        atomic.Bool
		paused    atomic.Bool
		inFlight  atomic.Int32
		maxPaused atomic.Int32 // most handlers at once while paused or probing
		trials    atomic.Int32
		mu        sync.Mutex
		done      = map[string]bool{}
	)
	const n = 8
	f := newFixture(t, testConfig(t), worker.Route{
		Queue: ".q", Concurrency: 4, Prefetch: 8,
		Retry: retry.Policy{MaxAttempts: 20, Delays: []time.Duration{100 * time.Millisecond}},
		Pause: worker.Pause{After: 3, MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Handler: worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
			now := inFlight.Add(1)
			defer inFlight.Add(-1)
			if paused.Load() {
				trials.Add(1)
				for {
					m := maxPaused.Load()
					if now <= m || maxPaused.CompareAndSwap(m, now) {
						break
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
			if !up.Load() {
				return errors.New("downstream timeout")
			}
			mu.Lock()
			done[d.MessageID] = true
			mu.Unlock()
			return nil
		}),
	}).start()
	q := f.queue + ".q"
	reg := f.w.Registry()
	for i := range n {
		f.publish(".q", broker.Message{MessageID: fmt.Sprintf("m%d", i), Body: []byte("x")})
	}
	waitUntil(t, 30*time.Second, func() bool { return testenv.MetricValue(t, reg, "warren_route_paused", q) == 1 })
	// Handlers under way when it paused may still finish; then only trials run.
	waitUntil(t, 30*time.Second, func() bool { return inFlight.Load() == 0 })
	paused.Store(true)
	waitUntil(t, 30*time.Second, func() bool { return trials.Load() >= 3 })
	if v := testenv.MetricValue(t, reg, "warren_route_paused", q); v != 1 {
		t.Fatalf("warren_route_paused = %v while trials fail", v)
	}
	paused.Store(false) // from here on handlers may run side by side again
	up.Store(true)
	waitUntil(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == n
	})
	if m := maxPaused.Load(); m != 1 {
		t.Fatalf("%d handlers ran at once while the route probed, want 1 trial at a time", m)
	}
	waitUntil(t, 20*time.Second, func() bool { return testenv.MetricValue(t, reg, "warren_route_paused", q) == 0 })
	waitUntil(t, 20*time.Second, f.w.Ready)
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters", got)
	}
}

// TestDecideUnavailable: Unavailable goes round the first tier on any
// attempt, the last included; it is never dead-lettered, even wrapping a
// permanent error.
func TestDecideUnavailable(t *testing.T) {
	p := retry.Policy{Delays: []time.Duration{time.Second, time.Minute}, MaxAttempts: 3}
	for _, err := range []error{
		worker.Unavailable(errors.New("db down")),
		fmt.Errorf("saving: %w", worker.Unavailable(worker.Permanent(errors.New("refused")))),
	} {
		for attempt := 1; attempt <= 4; attempt++ {
			d := worker.Decide(err, attempt, p)
			if d.Outcome != worker.OutcomeRetry || d.Delay != time.Second || d.Kind != worker.KindUnavailable {
				t.Fatalf("Decide(%v, attempt %d) = %+v, want a retry through the first tier, kind unavailable", err, attempt, d)
			}
		}
	}
}

// TestPauseFailureWhilePausedSpendsNoAttempt: once the route is paused,
// a failing trial spends no attempt; it goes round the first tier. With
// two attempts, one message and a dependency down for several trials,
// the message is never dead-lettered and succeeds once it is back.
func TestPauseFailureWhilePausedSpendsNoAttempt(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	var calls atomic.Int32
	rec := newRecorder()
	f := newFixture(t, testConfig(t), worker.Route{
		Queue: ".q", Concurrency: 1,
		Retry: retry.Policy{MaxAttempts: 2, Delays: []time.Duration{50 * time.Millisecond}},
		Pause: worker.Pause{After: 1, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
		Handler: worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
			calls.Add(1)
			if !up.Load() {
				return errors.New("downstream timeout")
			}
			rec.record(d)
			return nil
		}),
	}).start()
	q := f.queue + ".q"
	f.publish(".q", broker.Message{MessageID: "m", Body: []byte("x")})
	// The first failure pauses the route and spends attempt 1; every
	// trial after it fails too.
	waitUntil(t, 30*time.Second, func() bool { return calls.Load() >= 5 || f.admin.Count(retry.DLQ(q)) > 0 })
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters: a trial that failed while the route was paused spent an attempt", got)
	}
	up.Store(true)
	c := rec.wait(t, 1, 30*time.Second)[0]
	if c.attempt != 2 {
		t.Fatalf("succeeded on attempt %d, want 2 (only the failure that paused the route spent one)", c.attempt)
	}
	if got := f.admin.Count(retry.DLQ(q)); got != 0 {
		t.Fatalf("%d dead letters", got)
	}
}

package flow_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/flow"
	"github.com/warrenmq/warren/internal/testenv"
)

func newLimiter(t *testing.T, lease time.Duration) *flow.Limiter {
	t.Helper()
	c := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, c, prefix)
	l, err := flow.NewLimiter(c, flow.LimiterConfig{Prefix: prefix, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestLimiterConcurrency: many goroutines (standing for workers) take
// slots of two keys; a key never has more than its bound at once, and
// the other key is not held up by it.
func TestLimiterConcurrency(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, time.Second)
	ctx := ctxT(t)
	const bound, runs = 2, 40
	var wg sync.WaitGroup
	var inA, maxA, doneA, doneB atomic.Int32
	for i := range 8 {
		key := "a"
		if i%4 == 3 {
			key = "b"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if key == "a" && doneA.Load() >= runs || key == "b" && doneB.Load() >= runs/4 {
					return
				}
				s, err := l.Acquire(ctx, "q", key, flow.Limit{Concurrency: bound})
				if err != nil {
					t.Error(err)
					return
				}
				if !s.Held() {
					if s.Over != flow.OverConcurrency || s.RetryIn <= 0 {
						t.Errorf("refusal %q in %s", s.Over, s.RetryIn)
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				if key == "a" {
					now := inA.Add(1)
					for m := maxA.Load(); now > m && !maxA.CompareAndSwap(m, now); m = maxA.Load() {
					}
					time.Sleep(2 * time.Millisecond)
					inA.Add(-1)
					doneA.Add(1)
				} else {
					doneB.Add(1)
				}
				if err := s.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if m := maxA.Load(); m > bound || m < 1 {
		t.Fatalf("key a had %d holders at once, bound %d", m, bound)
	}
	if doneB.Load() < runs/4 {
		t.Fatalf("key b ran %d times", doneB.Load())
	}
}

// TestLimiterLeaseFreesDeadHoldersSlot: a slot that is neither released
// nor extended (its worker died) is free again after the lease; one that
// is kept stays held.
func TestLimiterLeaseFreesDeadHoldersSlot(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, 300*time.Millisecond)
	ctx := ctxT(t)
	lim := flow.Limit{Concurrency: 1}
	kept, err := l.Acquire(ctx, "q", "kept", lim)
	if err != nil || !kept.Held() {
		t.Fatalf("first slot: %v %+v", err, kept)
	}
	lost := make(chan error, 1)
	stop := kept.Keep(func(err error) { lost <- err })
	dead, err := l.Acquire(ctx, "q", "dead", lim)
	if err != nil || !dead.Held() {
		t.Fatalf("dead holder's slot: %v %+v", err, dead)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := l.Acquire(ctx, "q", "dead", lim)
		if err != nil {
			t.Fatal(err)
		}
		if s.Held() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a dead holder's slot never came back")
		}
		time.Sleep(s.RetryIn)
	}
	// Several leases later the kept slot is still held.
	time.Sleep(time.Second)
	if s, err := l.Acquire(ctx, "q", "kept", lim); err != nil || s.Held() {
		t.Fatalf("a kept slot was given to another: %v %+v", err, s)
	}
	stop()
	select {
	case err := <-lost:
		t.Fatalf("the kept slot was lost: %v", err)
	default:
	}
	if err := kept.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := l.Acquire(ctx, "q", "kept", lim); err != nil || !s.Held() {
		t.Fatalf("a released slot is not free: %v %+v", err, s)
	}
}

// TestLimiterRate: at most Rate slots per Period in any window, and the
// refusal says when the window has room.
func TestLimiterRate(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, time.Second)
	ctx := ctxT(t)
	lim := flow.Limit{Rate: 3, Period: 400 * time.Millisecond}
	type start struct{ before, after time.Time } // around the Acquire call
	var starts []start
	deadline := time.Now().Add(30 * time.Second)
	for len(starts) < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d starts", len(starts))
		}
		before := time.Now()
		s, err := l.Acquire(ctx, "q", "k", lim)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Held() {
			if s.Over != flow.OverRate || s.RetryIn <= 0 || s.RetryIn > lim.Period {
				t.Fatalf("refusal %q in %s", s.Over, s.RetryIn)
			}
			time.Sleep(s.RetryIn / 2)
			continue
		}
		starts = append(starts, start{before, time.Now()})
	}
	// Any Rate+1 consecutive starts span at least a period on Redis's
	// clock. Redis took each decision between our before and after, so
	// from the first one's before to the last one's after is at least
	// that span, however long the round trips took, less what Redis's
	// clock (the system's wall clock, which may be slewed) gains on ours
	// (monotonic): 399.9ms for 400ms was seen while the machine's clock
	// was being corrected; 1% is allowed.
	for i := lim.Rate; i < len(starts); i++ {
		if span := starts[i].after.Sub(starts[i-lim.Rate].before); span < lim.Period-lim.Period/100 {
			t.Fatalf("%d starts within %s, rate %d per %s", lim.Rate+1, span, lim.Rate, lim.Period)
		}
	}
}

func TestLimitValidate(t *testing.T) {
	for _, l := range []flow.Limit{{Concurrency: -1}, {Rate: -1}, {Rate: 1}} {
		if l.Validate() == nil {
			t.Fatalf("%+v accepted", l)
		}
	}
}

package worker

import (
	"context"
	"time"
)

// retrySchedule says how often a store call that found the store
// unavailable is made in all, and how long to wait between calls: first,
// then each wait factor times longer, up to most.
type retrySchedule struct {
	tries       int
	first, most time.Duration
	factor      int
}

// commitRetries is the schedule of a handler's commit: 3 calls, waiting
// 50ms and 200ms, so that a handler is not held up for long.
var commitRetries = retrySchedule{tries: 3, first: 50 * time.Millisecond, most: 200 * time.Millisecond, factor: 4}

// markRetries is the schedule of the done marks: 8 calls over about 3.5s
// of waits (50ms doubling up to 1s), long enough to outlast a Redis
// failover (2-4s seen with Sentinel and Cluster), so that a success whose
// mark met the failover is still recorded and does not run again. Only
// the finisher waits, not the handlers; the acks of the messages it holds
// wait with it.
var markRetries = retrySchedule{tries: 8, first: 50 * time.Millisecond, most: time.Second, factor: 2}

// withRetries calls try until it reports that nothing is left to try
// again, at most s.tries times, waiting between calls; it stops waiting
// when ctx ends. It is the one retry loop of every store call the worker
// repeats: the done marks and a handler's commit.
func withRetries(ctx context.Context, s retrySchedule, try func() (again bool)) {
	wait := s.first
	for n := 1; ; n++ {
		if !try() || n == s.tries || ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(wait*time.Duration(s.factor), s.most)
	}
}

// every calls fn every interval in a goroutine of its own until the
// returned stop is called; stop waits for it to end.
func every(interval time.Duration, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

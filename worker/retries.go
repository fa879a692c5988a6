package worker

import (
	"context"
	"time"
)

// Store calls that found the store unavailable are tried storeTries times
// in all, the first wait storeRetryWait and each next one four times
// longer (50ms, 200ms).
const (
	storeTries     = 3
	storeRetryWait = 50 * time.Millisecond
)

// withRetries calls try until it reports that nothing is left to try
// again, at most storeTries times, waiting between calls; it stops
// waiting when ctx ends. It is the one retry loop of every store call
// the worker repeats: the done marks and a handler's commit.
func withRetries(ctx context.Context, try func() (again bool)) {
	wait := storeRetryWait
	for n := 1; ; n++ {
		if !try() || n == storeTries || ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait *= 4
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

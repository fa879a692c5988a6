package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/retry"
)

// pausedRig is a rig whose route pauses after after failures and does not
// probe within a test.
func pausedRig(t *testing.T, h Handler, concurrency, after int, ordered bool) *rig {
	return newRig(t, rigOptions{handler: h, concurrency: concurrency, ordered: ordered,
		policy: retry.Policy{Delays: []time.Duration{10 * time.Millisecond}, MaxAttempts: 5},
		pause:  Pause{After: after, MinBackoff: time.Minute, MaxBackoff: time.Minute}})
}

// A handler failure that ends while the route is paused (here one that
// started before another's failure paused it) spends no attempt: on its
// last attempt it goes round the first tier instead of to the dead
// letters, its attempt header unchanged.
func TestPipelineFailureWhilePausedSpendsNoAttempt(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	h := HandlerFunc(func(_ context.Context, d *Delivery) error {
		if d.MessageID == "slow" {
			close(started)
			<-release
		}
		return errors.New("downstream timeout")
	})
	r := pausedRig(t, h, 2, 1, false)
	r.start()
	r.deliver("slow", retry.SetAttempt(nil, 5))
	// "slow" must be in its handler before "fast" pauses the route:
	// a message still waiting for a handler when the route pauses goes
	// back to its queue instead.
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow message never reached its handler")
	}
	r.deliver("fast", nil) // fails at once and pauses the route
	r.acks.waitSettled(t, 1)
	close(release)
	r.acks.waitSettled(t, 1)
	r.close()
	msgs := r.copies.messages
	queues := r.copies.queues()
	if len(queues) != 2 || queues[1] != retry.TierQueue("q", 10*time.Millisecond) {
		t.Fatalf("copies went to %v, want both to the first tier; acks %v", queues, r.acks.snapshot())
	}
	if n, _ := retry.Attempt(msgs[1].Headers); n != 5 {
		t.Fatalf("the failure that ended while paused went round with attempt %d, want 5 (none spent)", n)
	}
}

// On a route retried in place (an ordered route's partition) the
// failures are reported as they come: once they pause the route, the
// message goes back to the head of its queue instead of spending the
// rest of its attempts in place and being dead-lettered.
func TestPipelineInPlaceFailuresPause(t *testing.T) {
	var runs atomic.Int32
	h := HandlerFunc(func(context.Context, *Delivery) error {
		runs.Add(1)
		return errors.New("downstream timeout")
	})
	r := pausedRig(t, h, 1, 2, true)
	r.start()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	if got := r.acks.result(tag); got != settledRequeue {
		t.Fatalf("m1 settled with %q, want %q (back to the head of its partition); copies went to %v", got, settledRequeue, r.copies.queues())
	}
	if got := runs.Load(); got != 2 {
		t.Fatalf("the handler ran %d times, want 2 (the second failure pauses the route)", got)
	}
}

package worker

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// counting is a handler that counts its runs.
func counting(runs *atomic.Int32) Handler {
	return HandlerFunc(func(context.Context, *Delivery) error { runs.Add(1); return nil })
}

// A message whose claim a dead worker still holds runs here once the
// dead worker's lease runs out, instead of going round a tier to the
// back of the queue.
func TestPipelineAwaitsDeadHolder(t *testing.T) {
	const lease = 800 * time.Millisecond
	var runs atomic.Int32
	r := newRig(t, rigOptions{handler: counting(&runs), dedupe: true, lease: lease})
	// The dead worker's claim, taken just before it died.
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "dead", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	r.start()
	start := time.Now()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	took := time.Since(start)
	r.close()
	if got := r.acks.result(tag); got != settledAck {
		t.Fatalf("settled with %q, want %q", got, settledAck)
	}
	if runs.Load() != 1 {
		t.Errorf("handler ran %d time(s), want 1", runs.Load())
	}
	if got := r.copies.queues(); len(got) != 0 {
		t.Errorf("copies stored in %v, want none", got)
	}
	// It cannot have run before the dead worker's lease ran out.
	if took < lease/2 {
		t.Errorf("ran after %s, before the holder's lease of %s could run out", took, lease)
	}
}

// A message whose holder is alive (it renews its lease) goes round the
// first tier after one lease, without running.
func TestPipelineLiveHolderGoesRound(t *testing.T) {
	const lease = 600 * time.Millisecond
	var runs atomic.Int32
	r := newRig(t, rigOptions{handler: counting(&runs), dedupe: true, lease: lease})
	ctx, stop := context.WithCancel(context.Background())
	renewed := make(chan struct{})
	if st, err := r.store.Claim(ctx, r.key("m1"), "live", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	go func() {
		defer close(renewed)
		tick := time.NewTicker(lease / 6)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = r.store.Extend(ctx, r.key("m1"), "live", lease)
			}
		}
	}()
	r.start()
	start := time.Now()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	took := time.Since(start)
	stop()
	<-renewed
	r.close()
	if got := r.acks.result(tag); got != settledAckNow {
		t.Fatalf("settled with %q, want %q (after its copy went round the tier)", got, settledAckNow)
	}
	if runs.Load() != 0 {
		t.Errorf("handler ran %d time(s) while another owner held the claim", runs.Load())
	}
	if got := r.copies.queues(); !slices.Equal(got, []string{"q.retry.1s"}) {
		t.Errorf("copies stored in %v, want one in q.retry.1s", got)
	}
	if took < lease {
		t.Errorf("went round the tier after %s, before waiting one lease (%s)", took, lease)
	}
}

// A parked job does not hold a handler: with one handler, the message
// behind it runs first.
func TestPipelineParkedJobFreesItsHandler(t *testing.T) {
	const lease = 800 * time.Millisecond
	var mu sync.Mutex
	var order []string
	h := HandlerFunc(func(_ context.Context, d *Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, d.MessageID)
		return nil
	})
	r := newRig(t, rigOptions{handler: h, dedupe: true, lease: lease, concurrency: 1})
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "dead", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	r.start()
	t1 := r.deliver("m1", nil)
	t2 := r.deliver("m2", nil)
	r.acks.waitSettled(t, 2)
	r.close()
	for _, tag := range []uint64{t1, t2} {
		if got := r.acks.result(tag); got != settledAck {
			t.Errorf("tag %d settled with %q, want %q", tag, got, settledAck)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, []string{"m2", "m1"}) {
		t.Errorf("ran %v, want m2 while m1 waited, then m1", order)
	}
	if got := r.copies.queues(); len(got) != 0 {
		t.Errorf("copies stored in %v, want none", got)
	}
}

// On an ordered route the message waits in its handler: the partition's
// next message does not overtake it.
func TestPipelineOrderedWaitsInPlace(t *testing.T) {
	const lease = 800 * time.Millisecond
	var mu sync.Mutex
	var order []string
	h := HandlerFunc(func(_ context.Context, d *Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, d.MessageID)
		return nil
	})
	r := newRig(t, rigOptions{handler: h, dedupe: true, lease: lease, concurrency: 1})
	r.pipe.ordered = true
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "dead", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	r.start()
	r.deliver("m1", nil)
	r.deliver("m2", nil)
	r.acks.waitSettled(t, 2)
	r.close()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, []string{"m1", "m2"}) {
		t.Errorf("ran %v, want m1 (once its dead holder's lease ran out), then m2", order)
	}
	if got := r.copies.queues(); len(got) != 0 {
		t.Errorf("copies stored in %v, want none", got)
	}
}

// A parked job goes back to the queue when the drain begins.
func TestPipelineDrainGivesParkedBack(t *testing.T) {
	var runs atomic.Int32
	r := newRig(t, rigOptions{handler: counting(&runs), dedupe: true, lease: time.Minute})
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "dead", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	r.start()
	tag := r.deliver("m1", nil)
	deadline := time.Now().Add(10 * time.Second)
	for r.pipe.parked.in.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("m1 was not parked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.close()
	if got := r.acks.result(tag); got != settledRequeue {
		t.Errorf("settled with %q, want %q", got, settledRequeue)
	}
	if runs.Load() != 0 || len(r.copies.queues()) != 0 {
		t.Errorf("ran %d time(s), copies %v; want neither", runs.Load(), r.copies.queues())
	}
}

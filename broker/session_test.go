package broker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"go.uber.org/zap/zaptest"
)

// fakeWire records what the settler sends, and checks every frame against
// the set of finished deliveries: a multiple-ack must never cover a tag
// that is unfinished, and no tag may be settled twice.
type fakeWire struct {
	t        *testing.T
	mu       sync.Mutex
	finished map[uint64]settleKind // what the worker decided, set before settle
	settled  map[uint64]bool
	acks     int // ack frames sent
	singles  int // of them, acks of one delivery (multiple=false)
	closed   bool
}

func newFakeWire(t *testing.T) *fakeWire {
	return &fakeWire{t: t, finished: map[uint64]settleKind{}, settled: map[uint64]bool{}}
}

func (f *fakeWire) finish(tag uint64, k settleKind) {
	f.mu.Lock()
	f.finished[tag] = k
	f.mu.Unlock()
}

func (f *fakeWire) Ack(tag uint64, multiple bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks++
	lo := tag
	if multiple {
		lo = 1
	} else {
		f.singles++
	}
	for x := lo; x <= tag; x++ {
		if f.settled[x] {
			if !multiple || x == tag {
				f.t.Errorf("tag %d settled twice", x)
			}
			continue
		}
		if f.finished[x] != settleAck {
			f.t.Errorf("ack(%d, multiple=%v) covers tag %d, which is %v", tag, multiple, x, f.finished[x])
		}
		f.settled[x] = true
	}
	return nil
}

func (f *fakeWire) Nack(tag uint64, multiple, requeue bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if multiple {
		f.t.Errorf("nack with multiple=true")
	}
	if f.settled[tag] {
		f.t.Errorf("tag %d settled twice", tag)
	}
	if k := f.finished[tag]; k != settleRequeue && k != settleReject {
		f.t.Errorf("nack of tag %d, which is %v", tag, k)
	}
	f.settled[tag] = true
	return nil
}

func (f *fakeWire) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func runSession(t *testing.T, w *fakeWire, buffer int) (*session, func()) {
	s := newSession(nil, w, zaptest.NewLogger(t), buffer/2)
	done := make(chan struct{})
	go func() { defer close(done); s.run(nil) }()
	return s, func() { close(s.finish); <-done }
}

// TestSettlerOutOfOrder finishes deliveries in random order from many
// goroutines, with nacks mixed in, and checks that every ack the settler
// sends covers only finished deliveries and that all are settled in the end.
func TestSettlerOutOfOrder(t *testing.T) {
	for round := 0; round < 20; round++ {
		w := newFakeWire(t)
		s, stop := runSession(t, w, 64)
		const n = 2000
		tags := make([]uint64, n)
		for i := range tags {
			tags[i] = uint64(i + 1)
		}
		rand.Shuffle(n, func(i, j int) { tags[i], tags[j] = tags[j], tags[i] })
		s.delivered.Store(n)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := g; i < n; i += 8 {
					tag := tags[i]
					kind, finished := settleAck, settleAck
					switch tag % 17 {
					case 3:
						kind, finished = settleRequeue, settleRequeue // a retry in the middle of a run
					case 5:
						kind, finished = settleReject, settleReject
					case 7:
						kind = settleAckNow // the original of a retry copy
					}
					w.finish(tag, finished)
					if err := s.settle(tag, kind); err != nil {
						t.Errorf("settle: %v", err)
					}
				}
			}(g)
		}
		wg.Wait()
		stop()
		for tag := uint64(1); tag <= n; tag++ {
			if !w.settled[tag] {
				t.Fatalf("round %d: tag %d never settled", round, tag)
			}
		}
		if !w.closed {
			t.Fatal("channel not closed on finish")
		}
	}
}

// Once the subscription has ended, acks wait and go out as multiple-acks
// only, the nacks at once, and the channel closes settleGrace after the
// last frame (see settleGrace).
func TestSettlerAfterSubscriptionEnded(t *testing.T) {
	w := newFakeWire(t)
	s, stop := runSession(t, w, 2)
	const n = 100
	s.delivered.Store(n)
	s.endSubscription()
	for _, start := range []uint64{2, 1} {
		for tag := start; tag <= n; tag += 2 {
			kind, finished := settleAck, settleAck
			switch tag % 10 {
			case 3:
				kind = settleAckNow
			case 7:
				kind, finished = settleRequeue, settleRequeue
			}
			w.finish(tag, finished)
			if err := s.settle(tag, kind); err != nil {
				t.Fatal(err)
			}
		}
	}
	began := time.Now()
	stop()
	took := time.Since(began)
	w.mu.Lock()
	defer w.mu.Unlock()
	for tag := uint64(1); tag <= n; tag++ {
		if !w.settled[tag] {
			t.Fatalf("tag %d never settled", tag)
		}
	}
	if w.singles > 0 {
		t.Fatalf("%d acks went out one by one after the subscription ended; want multiple-acks only", w.singles)
	}
	if !w.closed {
		t.Fatal("channel not closed on finish")
	}
	if took < settleGrace-5*time.Millisecond {
		t.Fatalf("the channel closed %s after the last ack, want settleGrace (%s)", took, settleGrace)
	}
	t.Logf("%d ack frames; closed %s after finish", w.acks, took.Round(time.Millisecond))
}

// A retired session whose last settlements are nacks, after its acks went
// out, closes its channel: nothing is left to settle, though no ack waits
// to move base past the nacks. (A pause requeues the deliveries the pump
// still held this way; without the close each pause left a channel open.)
func TestRetiredSessionClosesAfterTrailingNacks(t *testing.T) {
	for _, retireFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("retire first %v", retireFirst), func(t *testing.T) {
			w := newFakeWire(t)
			s := newSession(nil, w, zaptest.NewLogger(t), 16)
			done := make(chan struct{})
			go func() { defer close(done); s.run(nil) }()
			s.delivered.Store(5)
			for tag := uint64(1); tag <= 3; tag++ {
				w.finish(tag, settleAck)
				if err := s.settle(tag, settleAck); err != nil {
					t.Fatal(err)
				}
			}
			s.endSubscription()
			if retireFirst {
				close(s.retire)
			}
			// The timer sends the acks first.
			waitUntil(t, "the acks of 1 to 3 are sent", func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.settled[3]
			})
			for tag := uint64(4); tag <= 5; tag++ {
				w.finish(tag, settleRequeue)
				if err := s.settle(tag, settleRequeue); err != nil {
					t.Fatal(err)
				}
			}
			if !retireFirst {
				close(s.retire)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				s.mu.Lock()
				base := s.base
				s.mu.Unlock()
				close(s.finish)
				<-done
				t.Fatalf("the retired session did not close with everything settled (base %d, delivered 5)", base)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if !w.closed {
				t.Fatal("the channel is not closed")
			}
		})
	}
}

// waitUntil waits, with a generous deadline, for cond.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSettlerCoalesces shows that in-order completions become far fewer
// ack frames than deliveries.
func TestSettlerCoalesces(t *testing.T) {
	w := newFakeWire(t)
	s := newSession(nil, w, zaptest.NewLogger(t), 128)
	const n = 1000
	s.delivered.Store(n)
	done := make(chan struct{})
	go func() { defer close(done); s.run(nil) }()
	for tag := uint64(1); tag <= n; tag++ {
		w.finish(tag, settleAck)
		if err := s.settle(tag, settleAck); err != nil {
			t.Fatal(err)
		}
	}
	close(s.finish)
	<-done
	for tag := uint64(1); tag <= n; tag++ {
		if !w.settled[tag] {
			t.Fatalf("tag %d never settled", tag)
		}
	}
	if w.acks >= n/10 {
		t.Fatalf("%d ack frames for %d deliveries: not coalesced", w.acks, n)
	}
	t.Logf("%d ack frames for %d deliveries", w.acks, n)
}

// TestSettlerHoldsBehindGap: an unfinished delivery blocks the multiple
// ack; acks behind it go out one by one after ackHold, never covering it.
func TestSettlerHoldsBehindGap(t *testing.T) {
	w := newFakeWire(t)
	s, stop := runSession(t, w, 64)
	s.delivered.Store(5)
	for _, tag := range []uint64{1, 3, 4, 5} {
		w.finish(tag, settleAck)
		if err := s.settle(tag, settleAck); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		ok := w.settled[5]
		w.mu.Unlock()
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	if w.settled[2] {
		t.Fatal("tag 2 acked while unfinished")
	}
	if !w.settled[5] {
		t.Fatal("held acks were never sent")
	}
	w.mu.Unlock()
	w.finish(2, settleAck)
	if err := s.settle(2, settleAck); err != nil {
		t.Fatal(err)
	}
	stop()
	if !w.settled[2] {
		t.Fatal("tag 2 never acked")
	}
}

// TestSettleAfterDeath: results for a dead session are dropped, never
// sent, so they cannot ack another message on a newer channel.
func TestSettleAfterDeath(t *testing.T) {
	w := newFakeWire(t)
	s := newSession(nil, w, zaptest.NewLogger(t), 8)
	closed := make(chan *amqp.Error, 1)
	done := make(chan struct{})
	go func() { defer close(done); s.run(closed) }()
	closed <- &amqp.Error{Code: 320, Reason: "connection forced"}
	<-done
	if err := s.settle(1, settleAck); !errors.Is(err, ErrStale) {
		t.Fatalf("settle after death = %v, want ErrStale", err)
	}
	if w.acks != 0 {
		t.Fatal("an ack was sent on a dead channel")
	}
}

// TestSettlerAcrossReconnect: handlers settle out of order, with retries
// (requeues) and rejects mixed in, while the channel dies under them and
// a new one takes over with delivery tags that start again at 1. Every
// frame on each wire covers only deliveries of that channel that were
// finished; after the old channel died, its results are dropped with
// ErrStale and nothing more is written to it; the new channel settles all
// of its deliveries.
func TestSettlerAcrossReconnect(t *testing.T) {
	for round := 0; round < 10; round++ {
		const n = 1000
		oldWire, newWire := newFakeWire(t), newFakeWire(t)
		oldSess := newSession(nil, oldWire, zaptest.NewLogger(t), 32)
		closed := make(chan *amqp.Error, 1)
		oldDone := make(chan struct{})
		go func() { defer close(oldDone); oldSess.run(closed) }()
		oldSess.delivered.Store(n)
		newSess, stopNew := runSession(t, newWire, 64)
		newSess.delivered.Store(n)

		kindOf := func(tag uint64) settleKind {
			switch tag % 13 {
			case 4:
				return settleRequeue // a retry in the middle of a run
			case 9:
				return settleReject
			}
			return settleAck
		}
		settleAll := func(s *session, w *fakeWire, tags []uint64, stale *atomic.Int64, kill func(i int)) {
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := g; i < len(tags); i += 8 {
						if kill != nil {
							kill(i)
						}
						k := kindOf(tags[i])
						w.finish(tags[i], k)
						switch err := s.settle(tags[i], k); {
						case errors.Is(err, ErrStale) && stale != nil:
							stale.Add(1)
						case err != nil:
							t.Errorf("settle(%d): %v", tags[i], err)
						}
					}
				}(g)
			}
			wg.Wait()
		}
		shuffled := func() []uint64 {
			tags := make([]uint64, n)
			for i := range tags {
				tags[i] = uint64(i + 1)
			}
			rand.Shuffle(n, func(i, j int) { tags[i], tags[j] = tags[j], tags[i] })
			return tags
		}

		// The old channel dies once about half its results are in.
		var once sync.Once
		var stale atomic.Int64
		settleAll(oldSess, oldWire, shuffled(), &stale, func(i int) {
			if i >= n/2 {
				once.Do(func() {
					closed <- &amqp.Error{Code: 320, Reason: "connection forced"}
					<-oldDone
				})
			}
		})
		if stale.Load() == 0 {
			t.Fatalf("round %d: no result was dropped after the channel died", round)
		}
		oldWire.mu.Lock()
		sentBefore := len(oldWire.settled)
		oldWire.mu.Unlock()
		// Results that come in after the death change nothing on it.
		for tag := uint64(1); tag <= n; tag++ {
			if err := oldSess.settle(tag, settleAck); !errors.Is(err, ErrStale) {
				t.Fatalf("settle on the dead channel = %v, want ErrStale", err)
			}
		}
		oldWire.mu.Lock()
		if len(oldWire.settled) != sentBefore {
			t.Fatalf("round %d: %d more deliveries settled on the dead channel", round, len(oldWire.settled)-sentBefore)
		}
		oldWire.mu.Unlock()

		settleAll(newSess, newWire, shuffled(), nil, nil)
		stopNew()
		for tag := uint64(1); tag <= n; tag++ {
			if !newWire.settled[tag] {
				t.Fatalf("round %d: tag %d of the new channel never settled", round, tag)
			}
		}
	}
}

// TestAckNowDoesNotWait: an ack asked for at once goes out before settle
// returns, alone when an unfinished delivery is before it, and within the
// multiple-ack of the finished prefix when it extends that prefix.
func TestAckNowDoesNotWait(t *testing.T) {
	w := newFakeWire(t)
	s, stop := runSession(t, w, 64)
	defer stop()
	s.delivered.Store(4)
	settled := func(tag uint64) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.settled[tag]
	}
	w.finish(3, settleAck)
	if err := s.settle(3, settleAckNow); err != nil {
		t.Fatal(err)
	}
	if !settled(3) || settled(1) || settled(2) {
		t.Fatalf("after AckNow(3) behind 1 and 2: settled %v", w.settled)
	}
	w.finish(1, settleAck)
	if err := s.settle(1, settleAck); err != nil {
		t.Fatal(err)
	}
	if settled(1) {
		t.Fatal("a plain ack went out at once; it should wait to be coalesced")
	}
	w.finish(2, settleAck)
	if err := s.settle(2, settleAckNow); err != nil {
		t.Fatal(err)
	}
	if !settled(1) || !settled(2) {
		t.Fatalf("after AckNow(2) the finished prefix 1..3 should be acked: settled %v", w.settled)
	}
}

// TestServerCancelEndsTheSubscription: when the broker ends the
// subscription, the pump marks the session's subscription ended before
// it returns, so that if Stop comes before the consumer retires the
// session, Close still keeps the channel open for settleGrace after the
// last acks (quorum queues drop what their broker-side client still
// holds when the channel closes). The test checks the marks that Close's
// wait depends on: the subscription ended, and the last ack's time.
func TestServerCancelEndsTheSubscription(t *testing.T) {
	w := newFakeWire(t)
	s := newSession(nil, w, zaptest.NewLogger(t), 16)
	done := make(chan struct{})
	go func() { defer close(done); s.run(nil) }()
	cn := &Consumer{cfg: ConsumerConfig{Queue: "q", Prefetch: 4}, log: zaptest.NewLogger(t),
		out: make(chan *Delivery, 4), stop: make(chan struct{}), done: make(chan struct{})}
	cn.sub.prefetch, cn.sub.changed = 4, make(chan struct{})

	deliveries := make(chan amqp.Delivery, 1)
	deliveries <- amqp.Delivery{DeliveryTag: 1}
	close(deliveries) // the broker's basic.cancel
	if delivered, changed := cn.pump(s, deliveries, 4); !delivered || changed {
		t.Fatalf("pump returned delivered %v, changed %v; want true, false", delivered, changed)
	}
	// Stop came meanwhile: the consumer does not retire the session. The
	// handler finishes its delivery, then the consumer closes.
	d := <-cn.out
	w.finish(1, settleAck)
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	close(s.finish)
	<-done
	s.mu.Lock()
	ended, lastSent := s.ended, s.lastSent
	s.mu.Unlock()
	if !ended || lastSent.IsZero() {
		t.Fatalf("after the broker ended the subscription: ended %v, last settlement recorded %v; want both, so that the channel stays open for settleGrace", ended, !lastSent.IsZero())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.settled[1] || !w.closed {
		t.Fatalf("settled %v, channel closed %v; want both", w.settled[1], w.closed)
	}
}

// TestHandOutSurvivesAPauseUndone: a pause followed by a resume with the
// same prefetch while a delivery waits to be handed out leaves the
// subscription as it was; the delivery is handed out, not requeued.
func TestHandOutSurvivesAPauseUndone(t *testing.T) {
	w := newFakeWire(t)
	s := newSession(nil, w, zaptest.NewLogger(t), 16)
	done := make(chan struct{})
	go func() { defer close(done); s.run(nil) }()
	defer func() { close(s.finish); <-done }()
	cn := &Consumer{cfg: ConsumerConfig{Queue: "q", Prefetch: 4}, log: zaptest.NewLogger(t),
		out: make(chan *Delivery), stop: make(chan struct{}), done: make(chan struct{})}
	cn.sub.prefetch, cn.sub.changed = 4, make(chan struct{})

	deliveries := make(chan amqp.Delivery, 1)
	deliveries <- amqp.Delivery{DeliveryTag: 1}
	pumped := make(chan struct{})
	go func() { defer close(pumped); cn.pump(s, deliveries, 4) }()
	waitUntil(t, "the delivery is taken from the broker's stream", func() bool { return s.delivered.Load() == 1 })
	// A pause and a resume in one step, as the pump sees them when both
	// come before it looks (it cannot see the pause alone, which would
	// requeue the delivery as it should).
	cn.sub.mu.Lock()
	close(cn.sub.changed)
	cn.sub.changed = make(chan struct{})
	cn.sub.mu.Unlock()
	select {
	case d := <-cn.out:
		if d.DeliveryTag != 1 {
			t.Fatalf("handed out tag %d, want 1", d.DeliveryTag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery was not handed out after the pause was undone")
	}
	close(deliveries)
	<-pumped
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.settled[1] {
		t.Fatal("the delivery was settled (requeued) although it was handed out")
	}
}

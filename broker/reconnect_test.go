package broker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestReconnectResumesConsuming cuts the connection under a consumer and a
// publisher: the connection comes back by itself, the topology is declared
// again, consumption resumes, acks of deliveries from the dead channel are
// dropped (and those messages are redelivered), and nothing is lost.
func TestReconnectResumesConsuming(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	proxy, url := testenv.AMQPProxy(t)
	c := dial(t, url)
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 10})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := 0; i < n/2; i++ {
		if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	var held *broker.Delivery
	for len(seen) < n/4 {
		d := <-cons.Deliveries()
		if held == nil {
			held = d // keep one unacked across the cut
			seen[d.MessageID] = false
			continue
		}
		seen[d.MessageID] = true
		_ = d.Ack()
	}
	proxy.Cut()
	waitFor(t, func() bool { return held.Stale() })
	if err := held.Ack(); !errors.Is(err, broker.ErrStale) {
		t.Fatalf("ack on a dead channel = %v, want ErrStale", err)
	}
	// Publishing goes on through the outage.
	for i := n / 2; i < n; i++ {
		if err := pub.Publish(ctxT(t, 20*time.Second), ex, "k", broker.Message{MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("publish after cut: %v", err)
		}
	}
	acked := 0
	for _, ok := range seen {
		if ok {
			acked++
		}
	}
	timeout := time.After(30 * time.Second)
	for acked < n {
		select {
		case d := <-cons.Deliveries():
			if d.Ack() == nil && !seen[d.MessageID] {
				seen[d.MessageID] = true
				acked++
			}
		case <-timeout:
			t.Fatalf("after reconnect got %d of %d distinct messages", acked, n)
		}
	}
	if c.Reconnects() == 0 {
		t.Fatal("no reconnect counted")
	}
	cons.Stop()
	_ = cons.Close()
	if got := a.WaitCount(q, 0, 5*time.Second); got != 0 {
		t.Fatalf("%d messages left in the queue", got)
	}
}

// TestStopRequeuesUnstarted: deliveries prefetched but not handed out go
// back to the queue on Stop, and handed-out ones can still be acked.
func TestStopRequeuesUnstarted(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Classic)
	pub := c.NewPublisher()
	defer pub.Close()
	for i := 0; i < 20; i++ {
		if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 20})
	if err != nil {
		t.Fatal(err)
	}
	first := <-cons.Deliveries()
	waitFor(t, func() bool { return a.Count(q) == 0 }) // all 20 prefetched
	cons.Stop()
	for range cons.Deliveries() {
		t.Fatal("delivery handed out after Stop")
	}
	if err := first.Ack(); err != nil {
		t.Fatalf("ack after Stop: %v", err)
	}
	_ = cons.Close()
	if got := a.WaitCount(q, 19, 5*time.Second); got != 19 {
		t.Fatalf("queue holds %d after stop, want the 19 unstarted", got)
	}
}

// Acks sent after Stop (handlers finishing during a drain) all count,
// on quorum queues too, also behind a burst of requeues. The broker's
// quorum-queue client holds back settlements once 32 of its commands
// await the queue, and drops what it held when the channel closes: a
// burst of single acks right before Close used to come back as
// redeliveries of messages already handled.
func TestAcksAfterStopAllCount(t *testing.T) {
	t.Parallel()
	for _, qt := range []broker.QueueType{broker.Classic, broker.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			a := testenv.NewAdmin(t)
			c := dial(t, testenv.AMQPURL())
			ex, q := declareSimple(t, a, c, qt)
			pub := c.NewPublisher()
			defer pub.Close()
			const n = 200
			batch := make([]broker.Outgoing, n)
			for i := range batch {
				batch[i] = broker.Outgoing{Exchange: ex, RoutingKey: "k"}
			}
			for i, err := range pub.PublishBatch(ctxT(t, 20*time.Second), batch) {
				if err != nil {
					t.Fatalf("publishing %d: %v", i, err)
				}
			}
			cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: n, AckBatch: 1})
			if err != nil {
				t.Fatal(err)
			}
			var held []*broker.Delivery
			timeout := time.After(20 * time.Second)
			for len(held) < n {
				select {
				case d := <-cons.Deliveries():
					held = append(held, d)
				case <-timeout:
					t.Fatalf("got %d of %d deliveries", len(held), n)
				}
			}
			cons.Stop()
			// Handlers finish out of order: a quarter of them give their
			// message back (a burst of nacks, each a command of its own
			// on the broker), then the others succeed, every other one
			// first.
			requeued := 0
			for i := 0; i < n; i += 4 {
				if err := held[i].Nack(true); err != nil {
					t.Fatalf("nack after Stop: %v", err)
				}
				requeued++
			}
			for _, start := range []int{1, 0} {
				for i := start; i < n; i += 2 {
					if i%4 == 0 {
						continue
					}
					if err := held[i].Ack(); err != nil {
						t.Fatalf("ack after Stop: %v", err)
					}
				}
			}
			_ = cons.Close()
			// What the broker did not count as settled comes back to
			// the queue once it has handled the channel's close.
			if got, _ := testenv.WaitStable(10*time.Second, time.Second, func() int { return a.Count(q) }); got != requeued {
				t.Fatalf("queue holds %d after Close, want the %d requeued ones (the acked ones came back)", got, requeued)
			}
		})
	}
}

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
	top, ex, q := simpleTopology(t, a, broker.Quorum)
	if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
		t.Fatal(err)
	}
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
	top, ex, q := simpleTopology(t, a, broker.Classic)
	if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
		t.Fatal(err)
	}
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

package broker_test

import (
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestConsumerPauseResume: Pause cancels the subscription (the queue has
// no consumer, its messages stay ready), a held delivery can still be
// settled, and Resume subscribes again, with a prefetch of one when asked.
func TestConsumerPauseResume(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cons.Close() }()
	publish := func(id string) {
		t.Helper()
		if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{MessageID: id, Body: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	publish("held")
	held := receive(t, cons, 20*time.Second, "before the pause")

	cons.Pause()
	waitForWithin(t, 30*time.Second, "the subscription to be cancelled", func() bool { return !cons.Active() })
	for _, id := range []string{"p1", "p2", "p3"} {
		publish(id)
	}
	if got := a.WaitCount(q, 3, 20*time.Second); got != 3 {
		t.Fatalf("%d messages ready while paused, want 3", got)
	}
	select {
	case d := <-cons.Deliveries():
		t.Fatalf("a paused consumer handed out %q", d.MessageID)
	default:
	}
	if err := held.Ack(); err != nil {
		t.Fatalf("settling a delivery held across the pause: %v", err)
	}
	// A quorum queue lists a cancelled consumer until its deliveries are
	// settled.
	waitForWithin(t, 30*time.Second, "the queue to have no consumer", func() bool { return a.TryConsumers(q) == 0 })
	if got := a.Count(q); got != 3 {
		t.Fatalf("%d messages ready while paused, want 3", got)
	}

	cons.Resume(1)
	waitForWithin(t, 30*time.Second, "the subscription to come back", func() bool { return a.TryConsumers(q) == 1 })
	first := receive(t, cons, 20*time.Second, "after the resume")
	// Prefetch 1: nothing more comes until the first is settled.
	if got := a.WaitCount(q, 2, 20*time.Second); got != 2 {
		t.Fatalf("%d messages ready with one held under prefetch 1, want 2", got)
	}
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	cons.Resume(0) // the configured prefetch: subscribes again
	got := map[string]bool{first.MessageID: true}
	for len(got) < 3 {
		d := receive(t, cons, 20*time.Second, "after the second resume")
		got[d.MessageID] = true
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.WaitCount(q, 0, 10*time.Second); got != 0 {
		t.Fatalf("%d messages left", got)
	}
}

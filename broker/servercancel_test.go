package broker_test

import (
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// receive waits for the next delivery of cons.
func receive(t *testing.T, cons *broker.Consumer, within time.Duration, what string) *broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-cons.Deliveries():
		if !ok {
			t.Fatalf("%s: the consumer's stream closed", what)
		}
		return d
	case <-time.After(within):
		t.Fatalf("%s: no delivery within %s", what, within)
		return nil
	}
}

// TestServerCancelOnQueueDeleted: deleting the queue under a consumer makes
// the broker send basic.cancel; the consumer declares its topology again
// and consumes the new queue, on RabbitMQ 3.10 and 4.x alike.
func TestServerCancelOnQueueDeleted(t *testing.T) {
	for _, qt := range []broker.QueueType{broker.Classic, broker.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			a := testenv.NewAdmin(t)
			c := dial(t, testenv.AMQPURL())
			ex, q := declareSimple(t, a, c, qt)
			pub := c.NewPublisher()
			defer pub.Close()
			cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cons.Close() }()
			if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{MessageID: "before", Body: []byte("1")}); err != nil {
				t.Fatal(err)
			}
			if d := receive(t, cons, 20*time.Second, "before the delete"); d.MessageID != "before" {
				t.Fatalf("got %q, want the message published before the delete", d.MessageID)
			} else if err := d.Ack(); err != nil {
				t.Fatal(err)
			}

			a.DeleteQueueNow(q)
			// The consumer notices the cancel, declares the queue again
			// (with its binding) and subscribes anew.
			waitForWithin(t, 60*time.Second, "the queue to be declared again with a consumer", func() bool {
				return a.TryConsumers(q) == 1
			})
			if !cons.Active() {
				t.Fatal("the consumer does not report an open subscription after consuming again")
			}
			if err := pub.Publish(ctxT(t, 20*time.Second), ex, "k", broker.Message{MessageID: "after", Body: []byte("2")}); err != nil {
				t.Fatalf("publish after the queue came back: %v", err)
			}
			d := receive(t, cons, 30*time.Second, "after the delete")
			if d.MessageID != "after" {
				t.Fatalf("got %q after the delete, want the new message", d.MessageID)
			}
			if err := d.Ack(); err != nil {
				t.Fatalf("ack on the new subscription: %v", err)
			}
			if got := a.WaitCount(q, 0, 10*time.Second); got != 0 {
				t.Fatalf("%d messages left in the queue", got)
			}
		})
	}
}

// TestConsumerTimeoutResumes: a delivery held past the broker's consumer
// timeout ends the subscription (RabbitMQ closes the channel, or cancels
// the consumer); the consumer subscribes again, the held message comes back
// and new messages flow. The queue's own timeout (x-consumer-timeout) needs
// RabbitMQ 3.12 or later; the broker checks it on its channel tick, which
// scripts/rabbitmq4.sh sets to one second.
func TestConsumerTimeoutResumes(t *testing.T) {
	a := testenv.NewAdmin(t)
	if !a.AtLeast(3, 12) {
		t.Skipf("RabbitMQ %s has no per-queue consumer timeout (3.12 or later)", a.Version())
	}
	for _, qt := range []broker.QueueType{broker.Classic, broker.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			a := testenv.NewAdmin(t)
			c := dial(t, testenv.AMQPURL())
			top, ex, q := simpleTopology(t, a, qt)
			top.Queues[0].Args = map[string]any{"x-consumer-timeout": int64(1000)}
			if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
				t.Fatal(err)
			}
			pub := c.NewPublisher()
			defer pub.Close()
			cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cons.Close() }()
			if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{MessageID: "held"}); err != nil {
				t.Fatal(err)
			}
			held := receive(t, cons, 20*time.Second, "the held message")
			if held.MessageID != "held" || held.Redelivered {
				t.Fatalf("first delivery: id %q redelivered %v", held.MessageID, held.Redelivered)
			}
			// Not settled: the broker's timeout fires. The message is
			// delivered again on a new subscription.
			again := receive(t, cons, 3*time.Minute, "the held message after the consumer timeout")
			if again.MessageID != "held" || !again.Redelivered {
				t.Fatalf("after the timeout got id %q redelivered %v, want the held message redelivered", again.MessageID, again.Redelivered)
			}
			if err := again.Ack(); err != nil {
				t.Fatalf("ack of the redelivered message: %v", err)
			}
			if err := pub.Publish(ctxT(t, 20*time.Second), ex, "k", broker.Message{MessageID: "new"}); err != nil {
				t.Fatal(err)
			}
			d := receive(t, cons, 30*time.Second, "a new message after the timeout")
			if d.MessageID != "new" {
				t.Fatalf("got %q, want the new message", d.MessageID)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
			// The first delivery's channel is gone or its ack is moot: the
			// queue ends empty either way.
			_ = held.Ack()
			if got := a.WaitCount(q, 0, 10*time.Second); got != 0 {
				t.Fatalf("%d messages left in the queue", got)
			}
		})
	}
}

// waitForWithin polls cond until it holds or within ends.
func waitForWithin(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

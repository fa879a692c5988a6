package compat_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestDeliveryLimitDeclared: warren declares x-delivery-limit on its
// quorum queues (WARREN_DELIVERY_LIMIT, 20 by default: RabbitMQ 4's own
// default, while 3.10 has none), so a message given back without a result
// again and again ends in the route's .dlq after the same number of
// deliveries on 3.10 and 4.x: the limit plus one.
func TestDeliveryLimitDeclared(t *testing.T) {
	t.Parallel()
	const limit = 2
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	dlq := retry.DLQ(q)
	a.DeleteQueues(q, dlq, retry.TierQueue(q, tier))
	w, err := worker.New(worker.Config{AMQPURL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t),
		RetryDelays: []time.Duration{tier}, Dedupe: worker.DedupeOff, QueueType: broker.Quorum, DeliveryLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(worker.Route{Queue: q, Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	top := w.Topology()
	if got := fmt.Sprint(top.Queues[0].Args["x-delivery-limit"]); top.Queues[0].Name != q || got != fmt.Sprint(limit) {
		t.Fatalf("%s declared with x-delivery-limit %s, want %d", top.Queues[0].Name, got, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, broker.Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Declare(ctx, top); err != nil {
		t.Fatal(err)
	}
	a.Publish("", q, amqp.Publishing{MessageId: "poison", Body: []byte("p")})

	// Give it back with requeue each time, the way a consumer that dies
	// before its result looks to the queue.
	ch := a.Channel()
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	deliveries := 0
	for a.TryCount(dlq) < 1 {
		select {
		case d := <-ds:
			deliveries++
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("after %d deliveries the message is not in %s", deliveries, dlq)
		}
	}
	if deliveries != limit+1 {
		t.Errorf("RabbitMQ %s dead-lettered after %d deliveries, want %d (the limit plus one)", a.Version(), deliveries, limit+1)
	}
	m, ok := a.Get(dlq)
	if !ok || m.MessageId != "poison" {
		t.Fatalf("dlq: got %q (%v), want the poison message", m.MessageId, ok)
	}
	if n := deathCount(m.Headers, q, "delivery_limit"); n != 1 {
		t.Errorf("the dead letter's x-death has no delivery_limit entry for %s: %v", q, m.Headers["x-death"])
	}
}

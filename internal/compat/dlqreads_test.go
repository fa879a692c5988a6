package compat_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestDeadLetterSurvivesReads: reading a dead letter without taking it
// (as warren dlq and the console do) returns it to the .dlq each time. A
// new quorum .dlq is declared with a delivery limit no reader reaches, so
// on RabbitMQ 4 (whose quorum queues drop a message returned 20 times by
// default) the letter is still there after 30 reads; and declaring the
// route again, with the .dlq existing, is accepted.
func TestDeadLetterSurvivesReads(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	dlq := retry.DLQ(q)
	a.DeleteQueues(q, dlq, retry.TierQueue(q, tier))
	cfg := worker.Config{AMQPURL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t),
		RetryDelays: []time.Duration{tier}, Dedupe: worker.DedupeOff, QueueType: broker.Quorum}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(worker.Route{Queue: q, Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := broker.Dial(ctx, broker.Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 2 { // the second time the .dlq exists
		if err := conn.Declare(ctx, w.Topology()); err != nil {
			t.Fatalf("declaring the route: %v", err)
		}
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	if err := pub.Publish(ctx, "", dlq, broker.Message{Body: []byte("dead")}); err != nil {
		t.Fatal(err)
	}
	raw, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		var m amqp.Delivery
		ok := false
		deadline := time.Now().Add(10 * time.Second)
		for !ok && time.Now().Before(deadline) { // a returned letter is back shortly
			if m, ok, err = ch.Get(dlq, false); err != nil {
				t.Fatal(err)
			}
			if !ok {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if !ok {
			t.Fatalf("the dead letter is gone after %d reads", i)
		}
		if err := m.Nack(false, true); err != nil {
			t.Fatal(err)
		}
	}
}

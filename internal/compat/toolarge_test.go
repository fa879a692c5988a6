package compat_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestCopyOverSizeLimit: a message already in a queue that is larger than
// the broker's max_message_size (it was published before the limit was
// lowered: an upgrade from 3.x's 128 MiB to 4.x's 16 MiB does that) fails
// its handler. The retry copy is refused for its size; no copy of it can be
// stored, so the original is rejected (reason too_large) and
// the queue's own dead-lettering moves it, body unchanged, to the .dlq.
// Nothing is lost, nothing loops, the handler runs once. On a private
// RabbitMQ 4 node, whose limit the test lowers.
func TestCopyOverSizeLimit(t *testing.T) {
	t.Parallel()
	node := testenv.StartRabbit4(t)
	const limit = 1 << 20
	body := bytes.Repeat([]byte("b"), limit+limit/2)
	q := "too-large"

	conn, err := amqp.Dial(node.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := worker.New(worker.Config{AMQPURL: node.URL(), Logger: zaptest.NewLogger(t),
		RetryDelays: []time.Duration{tier}, MaxAttempts: 3, Dedupe: worker.DedupeOff})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	if err := w.Handle(worker.Route{Queue: q, Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error {
		runs.Add(1)
		return errors.New("failing")
	})}); err != nil {
		t.Fatal(err)
	}
	// Declare first, publish the big message, lower the limit, and only
	// then let the worker consume: its publisher's channel gets the low one.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, qu := range w.Topology().Queues {
		args := amqp.Table(qu.Args)
		if args == nil {
			args = amqp.Table{}
		}
		args["x-queue-type"] = string(qu.Type)
		if _, err := ch.QueueDeclare(qu.Name, true, false, false, false, args); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", q, true, false, amqp.Publishing{MessageId: "big", Body: body, DeliveryMode: amqp.Persistent})
	if err != nil || !dc.Wait() {
		t.Fatalf("publishing the big message before the limit was lowered: %v", err)
	}
	// RabbitMQ 4.0 reads the limit from a persistent term set at boot.
	if out := node.Eval("application:set_env(rabbit, max_message_size, 1048576), persistent_term:put(max_message_size, 1048576)."); !strings.Contains(out, "ok") {
		t.Fatalf("lowering max_message_size: %s", out)
	}
	go func() { done <- w.Run(ctx) }()

	a := adminOf(t, conn)
	dlq := retry.DLQ(q)
	var m amqp.Delivery
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ok bool
		if m, ok, err = a.Get(dlq, true); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the big message is not in %s after a minute (handler runs: %d)", dlq, runs.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m.MessageId != "big" || !bytes.Equal(m.Body, body) {
		t.Errorf("dead letter %q of %d bytes, want big with its %d bytes unchanged", m.MessageId, len(m.Body), len(body))
	}
	if n := deathCount(m.Headers, q, "rejected"); n != 1 {
		t.Errorf("the dead letter was not moved by the broker for a reject: x-death %v", m.Headers["x-death"])
	}
	// Quiet for a while: no second run, no copy anywhere.
	time.Sleep(time.Second)
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want once", n)
	}
	for _, name := range []string{q, retry.TierQueue(q, tier), dlq} {
		qi, err := a.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if qi.Messages != 0 {
			t.Errorf("%s holds %d messages", name, qi.Messages)
		}
	}
}

// adminOf opens a channel on conn for the test's checks.
func adminOf(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

package testenv

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Admin opens a plain client connection for a test to inspect and clean up
// the broker, independent of the code under test.
type Admin struct {
	t    testing.TB
	conn *amqp.Connection
}

// NewAdmin connects to the test broker; it is closed at the end of the test.
func NewAdmin(t testing.TB) *Admin {
	t.Helper()
	return NewAdminAt(t, AMQPURL())
}

// NewAdminAt connects to the broker at url (one address), e.g. a node of
// a Cluster; it is closed at the end of the test.
func NewAdminAt(t testing.TB, url string) *Admin {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("admin connection to the test broker: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Admin{t: t, conn: conn}
}

func (a *Admin) channel() *amqp.Channel {
	a.t.Helper()
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatalf("admin channel: %v", err)
	}
	return ch
}

// Count returns the number of ready messages in queue.
func (a *Admin) Count(queue string) int {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		a.t.Fatalf("inspecting queue %q: %v", queue, err)
	}
	return q.Messages
}

// WaitCount waits until queue holds n ready messages or the timeout ends.
func (a *Admin) WaitCount(queue string, n int, timeout time.Duration) int {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := a.Count(queue)
		if got == n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Get fetches one message from queue, acking it. ok is false when empty.
func (a *Admin) Get(queue string) (amqp.Delivery, bool) {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	d, ok, err := ch.Get(queue, true)
	if err != nil {
		a.t.Fatalf("get from %q: %v", queue, err)
	}
	return d, ok
}

// Publish publishes a persistent message without confirms checking.
func (a *Admin) Publish(exchange, key string, p amqp.Publishing) {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		a.t.Fatalf("confirm mode: %v", err)
	}
	if p.DeliveryMode == 0 {
		p.DeliveryMode = amqp.Persistent
	}
	dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, p)
	if err != nil {
		a.t.Fatalf("publish: %v", err)
	}
	if !dc.Wait() {
		a.t.Fatalf("publish to %q/%q was nacked", exchange, key)
	}
}

// DeleteQueues deletes queues at the end of the test.
func (a *Admin) DeleteQueues(names ...string) {
	a.t.Cleanup(func() {
		ch, err := a.conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, n := range names {
			_, _ = ch.QueueDelete(n, false, false, false)
		}
	})
}

// DeleteExchanges deletes exchanges at the end of the test.
func (a *Admin) DeleteExchanges(names ...string) {
	a.t.Cleanup(func() {
		ch, err := a.conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, n := range names {
			_ = ch.ExchangeDelete(n, false, false)
		}
	})
}

// CloseAllConnections makes the broker drop every client connection, the
// way a broker restart or a network cut looks to a client. It runs
// rabbitmqctl against the test broker's node (see Rabbitmqctl).
func CloseAllConnections(t testing.TB) {
	t.Helper()
	out, err := Rabbitmqctl(t, "close_all_connections", "test: fault injection")
	if err != nil {
		t.Fatalf("rabbitmqctl close_all_connections: %v: %s", err, out)
	}
}

// DeclareQueue declares a durable classic queue with no arguments.
func (a *Admin) DeclareQueue(name string) {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		a.t.Fatalf("declare %q: %v", name, err)
	}
}

// TryCount returns the number of ready messages in queue, or -1 when the
// queue does not exist.
func (a *Admin) TryCount(queue string) int {
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatalf("admin channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return q.Messages
}

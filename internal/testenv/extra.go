package testenv

import (
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// GetAll takes every ready message out of queue, acking each, on one
// channel, and returns them in queue order.
func (a *Admin) GetAll(queue string) []amqp.Delivery {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			a.t.Fatalf("get from %q: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// PublishBatch publishes ps persistently on one confirmed channel and
// waits until the broker has confirmed every one of them.
func (a *Admin) PublishBatch(exchange, key string, ps []amqp.Publishing) {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		a.t.Fatalf("confirm mode: %v", err)
	}
	dcs := make([]*amqp.DeferredConfirmation, 0, len(ps))
	for _, p := range ps {
		if p.DeliveryMode == 0 {
			p.DeliveryMode = amqp.Persistent
		}
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, p)
		if err != nil {
			a.t.Fatalf("publish: %v", err)
		}
		dcs = append(dcs, dc)
	}
	for i, dc := range dcs {
		if !dc.Wait() {
			a.t.Fatalf("publish %d to %q/%q was nacked", i, exchange, key)
		}
	}
}

// Counts returns the ready-message count of each queue, read at about the
// same time.
func (a *Admin) Counts(queues ...string) []int {
	a.t.Helper()
	out := make([]int, len(queues))
	for i, q := range queues {
		out[i] = a.Count(q)
	}
	return out
}

// WaitStable waits until f returns the same value for the whole of quiet,
// or until timeout; it returns the last value and whether it settled.
func WaitStable(timeout, quiet time.Duration, f func() int) (int, bool) {
	deadline := time.Now().Add(timeout)
	last, since := f(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(25 * time.Millisecond)
		v := f()
		if v != last {
			last, since = v, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return last, true
		}
	}
	return last, false
}

// DeleteQueueNow deletes queue at once, whatever it holds.
func (a *Admin) DeleteQueueNow(queue string) {
	a.t.Helper()
	ch := a.channel()
	defer ch.Close()
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		a.t.Fatalf("delete %q: %v", queue, err)
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// Route binds a queue to a handler. Zero fields take the worker's settings.
type Route struct {
	// Queue to consume. Required. Its retry tiers and dead-letter queue
	// are named after it.
	Queue string
	// Handler processes each message. Required.
	Handler Handler
	// Name identifies the handler in logs and dead-letter headers.
	// "" means the queue name.
	Name string

	// Exchange, when set, is declared and the queue bound to it with
	// BindingKeys. "" means the queue is only declared (publishers reach
	// it through the default exchange).
	Exchange string
	// ExchangeKind is topic, direct, fanout or headers. "" means topic.
	ExchangeKind string
	// BindingKeys bind the queue to Exchange. nil means one binding with
	// the queue name as key.
	BindingKeys []string

	// Concurrency is how many handlers run at once. 0 means the worker's.
	Concurrency int
	// Prefetch is how many unacked messages the broker sends ahead.
	// 0 means the worker's, or twice Concurrency when that is 0 too.
	Prefetch int
	// Timeout bounds one handler run. 0 means the worker's.
	Timeout time.Duration
	// Retry overrides the worker's delay tiers and max attempts; zero
	// fields take the worker's.
	Retry retry.Policy
	// QueueType overrides the worker's queue type.
	QueueType broker.QueueType
	// Dedupe is "on" or "off" for this route. "" means the worker's.
	Dedupe string
	// DedupeKey derives the dedupe id of a message. nil means its message
	// id, or a hash of the body when it has none. A message it panics on
	// is dead-lettered, kind panic (a *CallbackPanicError), unrun.
	DedupeKey func(*Delivery) string
	// Middleware wraps Handler for this route, after the worker's.
	Middleware []Middleware
	// Pause says when the route stops taking messages because a
	// dependency is down, and how it finds out that it is back.
	Pause Pause
	// Limits bound the route's handlers per key across the fleet. The
	// zero value bounds nothing.
	Limits Limits
	// Order makes the route ordered per key (see Order). The zero value
	// leaves it unordered.
	Order Order
}

// Pause configures a route's pause on a downstream outage. A handler
// returning Unavailable(err) always pauses its route; After makes a run of
// ordinary failures do the same. A paused route cancels its subscription
// (its messages stay in the queue; those it held and had not started go
// back, no attempt spent), waits MinBackoff, then probes: with Probe
// set, it calls it, and resumes when it returns nil; without, it
// subscribes with a prefetch of one and runs one trial message, and
// resumes when its handler succeeds. A failed probe doubles the wait, up
// to MaxBackoff. A handler failure that ends while the route is paused
// (a trial's, or a handler's that started before the pause) spends no
// attempt: it goes round the first tier, as Unavailable does, so an
// outage dead-letters nothing however long it lasts.
type Pause struct {
	// After is how many consecutive handler failures (errors, panics,
	// timeouts; not permanent errors) pause the route. 0 means the
	// worker's PauseAfter; a negative value means never.
	After int
	// MinBackoff is the wait before the first probe. 0 means the worker's.
	MinBackoff time.Duration
	// MaxBackoff bounds the wait between probes. 0 means the worker's.
	MaxBackoff time.Duration
	// Probe checks the dependency; nil means a trial message. A panic in
	// it counts as a failed probe.
	Probe func(context.Context) error
}

// resolve fills the route's zero fields from the worker config.
func (r Route) resolve(c Config) (Route, error) {
	if r.Queue == "" {
		return r, errors.New("route: queue is required")
	}
	if r.Handler == nil {
		return r, fmt.Errorf("route %q: handler is required", r.Queue)
	}
	if len(r.Queue) > 200 {
		return r, fmt.Errorf("route %q: queue name is longer than 200 bytes, leaving no room for tier names", r.Queue)
	}
	if r.Name == "" {
		r.Name = r.Queue
	}
	if r.Exchange != "" && r.BindingKeys == nil {
		r.BindingKeys = []string{r.Queue}
	}
	if r.Concurrency == 0 {
		r.Concurrency = c.Concurrency
	}
	if r.Prefetch == 0 {
		r.Prefetch = c.Prefetch
	}
	if r.Prefetch == 0 {
		r.Prefetch = 2 * r.Concurrency
	}
	if r.Timeout == 0 {
		r.Timeout = c.HandlerTimeout
	}
	if r.Retry.Delays == nil {
		r.Retry.Delays = c.RetryDelays
	}
	if r.Retry.MaxAttempts == 0 {
		r.Retry.MaxAttempts = c.MaxAttempts
	}
	r.Retry = r.Retry.WithDefaults()
	if r.QueueType == "" {
		r.QueueType = c.QueueType
	}
	if r.Dedupe == "" {
		r.Dedupe = c.Dedupe
	}
	if r.Pause.After == 0 {
		r.Pause.After = c.PauseAfter
	}
	if r.Pause.MinBackoff == 0 {
		r.Pause.MinBackoff = c.PauseMinBackoff
	}
	if r.Pause.MaxBackoff == 0 {
		r.Pause.MaxBackoff = c.PauseMaxBackoff
	}
	return r, r.validate()
}

func (r Route) validate() error {
	switch {
	case r.Concurrency < 1:
		return fmt.Errorf("route %q: concurrency must be at least 1, got %d", r.Queue, r.Concurrency)
	case r.Prefetch < 1 || r.Prefetch > 65535:
		return fmt.Errorf("route %q: prefetch must be between 1 and 65535, got %d", r.Queue, r.Prefetch)
	case r.Timeout <= 0:
		return fmt.Errorf("route %q: timeout must be positive, got %s", r.Queue, r.Timeout)
	case r.Dedupe != DedupeOn && r.Dedupe != DedupeOff:
		return fmt.Errorf("route %q: dedupe must be on or off, got %q", r.Queue, r.Dedupe)
	case r.Pause.MinBackoff < 0 || r.Pause.MaxBackoff < r.Pause.MinBackoff:
		return fmt.Errorf("route %q: pause backoff must be positive with min <= max, got %s..%s", r.Queue, r.Pause.MinBackoff, r.Pause.MaxBackoff)
	}
	if err := r.Retry.Validate(); err != nil {
		return fmt.Errorf("route %q: %w", r.Queue, err)
	}
	if err := r.Limits.validate(); err != nil {
		return fmt.Errorf("route %q: %w", r.Queue, err)
	}
	if err := r.Order.validate(r); err != nil {
		return fmt.Errorf("route %q: %w", r.Queue, err)
	}
	return nil
}

// Topology returns what the route declares: its exchange and bindings,
// the queue (dead-lettering to its .dlq), one tier queue per retry delay
// (dead-lettering back to the queue alone) and the .dlq.
func (r Route) topology(deliveryLimit int) broker.Topology {
	quorum := r.QueueType == broker.Quorum
	main := map[string]any{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": retry.DLQ(r.Queue),
	}
	if quorum {
		main["x-delivery-limit"] = int64(deliveryLimit)
		atLeastOnce(main)
	}
	exchangeArgs := r.orderArgs(main)
	t := broker.Topology{Queues: []broker.Queue{{Name: r.Queue, Type: r.QueueType, Args: main}}}
	for _, d := range r.Retry.Delays {
		args := map[string]any{
			"x-message-ttl":             d.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": r.Queue,
		}
		if quorum {
			atLeastOnce(args)
		}
		t.Queues = append(t.Queues, broker.Queue{Name: retry.TierQueue(r.Queue, d), Type: r.QueueType, Args: args})
	}
	dlq := broker.Queue{Name: retry.DLQ(r.Queue), Type: r.QueueType}
	if quorum {
		// Reading a dead letter without taking it (warren dlq, the
		// console) returns it to the queue, and RabbitMQ 4 drops a quorum
		// queue's message returned 20 times unless told otherwise. Only
		// for a new .dlq: an existing one is used as it is (see README).
		dlq.CreateArgs = map[string]any{"x-delivery-limit": int64(dlqDeliveryLimit)}
	}
	t.Queues = append(t.Queues, dlq)
	if r.Exchange != "" {
		t.Exchanges = []broker.Exchange{{Name: r.Exchange, Kind: r.ExchangeKind, Args: exchangeArgs}}
		for _, k := range r.BindingKeys {
			t.Bindings = append(t.Bindings, broker.Binding{Exchange: r.Exchange, Queue: r.Queue, RoutingKey: k})
		}
	}
	return t
}

// dlqDeliveryLimit is the x-delivery-limit of a new quorum .dlq: as many
// reads as anyone will make.
const dlqDeliveryLimit = 1_000_000_000

// atLeastOnce makes a quorum queue keep a dead-lettered message until the
// target queue has confirmed it, so an expiring retry copy or a rejected
// message is never lost on the way.
func atLeastOnce(args map[string]any) {
	args["x-dead-letter-strategy"] = "at-least-once"
	args["x-overflow"] = "reject-publish"
}

// Topology returns everything the worker's routes declare: exchanges,
// queues with their retry tiers and dead-letter queues, and bindings.
func (w *Worker) Topology() broker.Topology {
	w.mu.Lock()
	defer w.mu.Unlock()
	var t broker.Topology
	for _, r := range w.routes {
		t = t.Merge(r.topology(w.cfg.DeliveryLimit))
	}
	return t
}

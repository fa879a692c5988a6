package worker

import (
	"context"

	"github.com/warrenmq/warren/broker"
)

// Delivery is what a handler receives: the message, where it came from,
// and which attempt this is.
type Delivery struct {
	broker.Message
	// Queue is the queue the message was consumed from.
	Queue string
	// Exchange and RoutingKey are where the message was first published,
	// also on retried copies, which the broker delivers from a tier queue.
	Exchange   string
	RoutingKey string
	// Redelivered is the broker's flag: this copy was delivered before
	// without a result (a crash or a lost connection).
	Redelivered bool
	// Attempt is 1 on the first delivery and grows with each retry.
	Attempt int
	// MaxAttempts is the route's limit: a failure on an attempt >=
	// MaxAttempts is dead-lettered.
	MaxAttempts int
	// IdempotencyKey is stable across redeliveries and retries of this
	// message (the dedupe key). Pass it to other systems that accept one,
	// so an effect that is repeated after a crash is not applied twice.
	IdempotencyKey string
}

// Handler processes one message. What it returns decides the message's fate:
//
//   - nil: done. With dedupe, the message is marked done; then it is acked.
//   - Permanent(err), or a JSON decode failure: dead-lettered at once to the
//     queue's .dlq with the error in its headers, then acked.
//   - RetryAfter(d, err): retried through the smallest delay tier >= d (the
//     largest tier when d exceeds them all), if attempts remain; otherwise
//     dead-lettered.
//   - Discard(err): acked and logged; nothing is kept.
//   - any other error, a panic or a timeout: retried through the next delay
//     tier if attempts remain; otherwise dead-lettered.
//
// ctx ends at the handler timeout and when a drain runs out of time.
type Handler interface {
	Handle(ctx context.Context, d *Delivery) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, d *Delivery) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, d *Delivery) error { return f(ctx, d) }

// Middleware wraps a handler, for every route (Worker.Use) or one
// (Route.Middleware).
type Middleware func(Handler) Handler

// chain applies mws so that the first one is the outermost.
func chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

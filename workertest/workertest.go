package workertest

import (
	"context"
	"encoding/json"
	"runtime/debug"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// DefaultTimeout bounds a handler run in Run unless Options say otherwise.
const DefaultTimeout = 10 * time.Second

// Delivery returns a delivery with body as a worker would hand it to a
// handler on its first attempt: message id "test-message", queue "test",
// routing key "test", attempt 1 of retry.DefaultMaxAttempts.
func Delivery(body []byte) *worker.Delivery {
	return &worker.Delivery{
		Message:        broker.Message{Body: body, MessageID: "test-message"},
		Queue:          "test",
		RoutingKey:     "test",
		Attempt:        1,
		MaxAttempts:    retry.DefaultMaxAttempts,
		IdempotencyKey: dedupe.Key(dedupe.DefaultKeyPrefix, "test", "test-message"),
	}
}

// JSONDelivery is Delivery with v encoded as JSON; it fails t if v does
// not encode.
func JSONDelivery(t testing.TB, v any) *worker.Delivery {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("workertest: encoding %T: %v", v, err)
	}
	d := Delivery(b)
	d.ContentType = "application/json"
	return d
}

// Options tune Run.
type Options struct {
	// Policy is the route's retry policy; zero fields take the defaults.
	Policy retry.Policy
	// Timeout bounds the handler run. 0 means DefaultTimeout.
	Timeout time.Duration
}

// Result is what the worker would do with the message.
type Result struct {
	worker.Decision
	// Err is what the handler returned (a *worker.PanicError after a panic).
	Err error
	// Duration is how long the handler ran.
	Duration time.Duration
}

// Run calls h with d the way a worker does (with a timeout, recovering a
// panic) and reports the outcome: ack, retry (with its delay tier),
// dead_letter (with its reason) or discard.
func Run(ctx context.Context, h worker.Handler, d *worker.Delivery, o Options) Result {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	p := o.Policy.WithDefaults()
	if d.MaxAttempts == 0 {
		d.MaxAttempts = p.MaxAttempts
	}
	start := time.Now()
	err := call(ctx, h, d, timeout)
	return Result{Decision: worker.Decide(err, d.Attempt, p), Err: err, Duration: time.Since(start)}
}

func call(ctx context.Context, h worker.Handler, d *worker.Delivery, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			err = &worker.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h.Handle(ctx, d)
}

package workertest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"

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
	// Store, when set, runs the handler under a dedupe claim on the
	// delivery's IdempotencyKey, as a worker with dedupe on does: a
	// message already marked done is a duplicate (the handler does not
	// run), a success is marked done, and with the Redis store the writes
	// the handler gives worker.CommitWithDone are committed with the done
	// mark. nil means dedupe off (CommitWithDone returns
	// worker.ErrNoAtomicStore).
	Store dedupe.Store
	// Logger receives the handler's logs (worker.Logger). nil means none;
	// zaptest.NewLogger(t) puts them in the test's output.
	Logger *zap.Logger
}

// Result is what the worker would do with the message.
type Result struct {
	worker.Decision
	// Err is what the handler returned (a *worker.PanicError after a
	// panic; an error wrapping context.DeadlineExceeded after a timeout),
	// or what the dedupe store answered.
	Err error
	// Duration is how long the run took.
	Duration time.Duration
}

// Run calls h with d through the worker's own execute stage (with a
// timeout, recovering a panic, under a dedupe claim when o.Store is set)
// and reports the outcome: ack, retry (with its delay tier), dead_letter
// (with its reason), discard, duplicate or requeue. Nothing is published.
func Run(ctx context.Context, h worker.Handler, d *worker.Delivery, o Options) Result {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	p := o.Policy.WithDefaults()
	if d.MaxAttempts == 0 {
		d.MaxAttempts = p.MaxAttempts
	}
	ex := worker.Execute(ctx, h, d, worker.ExecuteOptions{Policy: p, Timeout: timeout, Store: o.Store, Logger: o.Logger})
	return Result{Decision: ex.Decision, Err: ex.Err, Duration: ex.Duration}
}

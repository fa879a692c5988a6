package workertest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
	"github.com/warrenmq/warren/workertest"
)

type order struct {
	ID string `json:"id"`
}

func TestOutcomes(t *testing.T) {
	policy := retry.Policy{Delays: []time.Duration{time.Second, 10 * time.Second}, MaxAttempts: 3}
	cases := []struct {
		name    string
		err     error
		panics  bool
		attempt int
		want    worker.Outcome
		delay   time.Duration
		kind    string
		reason  string
	}{
		{name: "success", want: worker.OutcomeAck},
		{name: "plain error", err: errors.New("db down"), attempt: 1, want: worker.OutcomeRetry, delay: time.Second, kind: worker.KindError},
		{name: "second failure", err: errors.New("db down"), attempt: 2, want: worker.OutcomeRetry, delay: 10 * time.Second, kind: worker.KindError},
		{name: "last attempt", err: errors.New("db down"), attempt: 3, want: worker.OutcomeDeadLetter, kind: worker.KindError, reason: worker.KindExhausted},
		{name: "permanent", err: worker.Permanent(errors.New("bad")), attempt: 1, want: worker.OutcomeDeadLetter, kind: worker.KindPermanent, reason: worker.KindPermanent},
		{name: "retry after", err: worker.RetryAfter(2*time.Second, errors.New("busy")), attempt: 1, want: worker.OutcomeRetry, delay: 10 * time.Second, kind: worker.KindError},
		{name: "discard", err: worker.Discard(errors.New("stale")), attempt: 1, want: worker.OutcomeDiscard},
		{name: "panic", panics: true, attempt: 1, want: worker.OutcomeRetry, delay: time.Second, kind: worker.KindPanic},
		{name: "wrapped permanent", err: fmt.Errorf("ctx: %w", worker.Permanent(errors.New("x"))), attempt: 1, want: worker.OutcomeDeadLetter, kind: worker.KindPermanent, reason: worker.KindPermanent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
				if c.panics {
					panic("boom")
				}
				return c.err
			})
			d := workertest.Delivery([]byte("x"))
			if c.attempt > 0 {
				d.Attempt = c.attempt
			}
			res := workertest.Run(context.Background(), h, d, workertest.Options{Policy: policy})
			if res.Outcome != c.want || res.Delay != c.delay || res.Kind != c.kind || res.Reason != c.reason {
				t.Fatalf("got %+v, want outcome %s delay %s kind %q reason %q", res.Decision, c.want, c.delay, c.kind, c.reason)
			}
		})
	}
}

func TestJSONHandler(t *testing.T) {
	var got order
	h := worker.JSON(func(ctx context.Context, d *worker.Delivery, o order) error {
		got = o
		return nil
	})
	res := workertest.Run(context.Background(), h, workertest.JSONDelivery(t, order{ID: "o-1"}), workertest.Options{})
	if res.Outcome != worker.OutcomeAck || got.ID != "o-1" {
		t.Fatalf("outcome %s, order %+v", res.Outcome, got)
	}
	res = workertest.Run(context.Background(), h, workertest.Delivery([]byte("{not json")), workertest.Options{})
	if res.Outcome != worker.OutcomeDeadLetter || res.Kind != worker.KindDecode {
		t.Fatalf("bad body: got %+v", res.Decision)
	}
}

func TestTimeout(t *testing.T) {
	h := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		<-ctx.Done()
		return ctx.Err()
	})
	res := workertest.Run(context.Background(), h, workertest.Delivery(nil), workertest.Options{Timeout: 20 * time.Millisecond})
	if res.Outcome != worker.OutcomeRetry || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("got %+v (%v)", res.Decision, res.Err)
	}
}

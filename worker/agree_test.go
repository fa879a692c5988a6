package worker_test

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

// TestWorkertestAgreesWithWorker runs the same handlers through a route's
// pipeline (on fakes of the broker) and through workertest.Run, and
// checks that both reach the same outcome, tier, kind and reason.
func TestWorkertestAgreesWithWorker(t *testing.T) {
	policy := retry.Policy{Delays: []time.Duration{time.Second, 10 * time.Second}, MaxAttempts: 3}
	const timeout = 50 * time.Millisecond
	type order struct {
		ID string `json:"id"`
	}
	cases := []struct {
		name    string
		h       worker.Handler
		body    string
		attempt int
	}{
		{"success", ret(nil), "x", 1},
		{"error", ret(errors.New("db down")), "x", 1},
		{"second error", ret(errors.New("db down")), "x", 2},
		{"exhausted", ret(errors.New("db down")), "x", 3},
		{"permanent", ret(worker.Permanent(errors.New("bad"))), "x", 1},
		{"wrapped permanent", ret(fmt.Errorf("ctx: %w", worker.Permanent(errors.New("x")))), "x", 1},
		{"retry after", ret(worker.RetryAfter(2*time.Second, errors.New("busy"))), "x", 1},
		{"retry after, exhausted", ret(worker.RetryAfter(2*time.Second, errors.New("busy"))), "x", 3},
		{"discard", ret(worker.Discard(errors.New("stale"))), "x", 1},
		{"panic", worker.HandlerFunc(func(context.Context, *worker.Delivery) error { panic("boom") }), "x", 1},
		{"timeout", worker.HandlerFunc(func(ctx context.Context, _ *worker.Delivery) error {
			<-ctx.Done()
			return ctx.Err()
		}), "x", 1},
		{"decode", worker.JSON(func(context.Context, *worker.Delivery, order) error { return nil }), "{not json", 1},
		{"decoded", worker.JSON(func(context.Context, *worker.Delivery, order) error { return nil }), `{"id":"o-1"}`, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := worker.SettleOnFakes(t, c.h, []byte(c.body), c.attempt, policy, timeout)
			d := workertest.Delivery([]byte(c.body))
			d.Attempt = c.attempt
			res := workertest.Run(context.Background(), c.h, d, workertest.Options{Policy: policy, Timeout: timeout})
			if res.Decision != got {
				t.Errorf("workertest %+v, worker %+v", res.Decision, got)
			}
		})
	}
}

func ret(err error) worker.Handler {
	return worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return err })
}

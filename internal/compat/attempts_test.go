package compat_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

const tier = 100 * time.Millisecond

// run is one handler run as the handler saw it.
type run struct {
	id          string
	attempt     int
	tierDeaths  int64 // x-death count of the tier queue
	forgedDeath int64 // x-death count of the forged entry
}

// startWorker runs a worker with one route on a unique queue whose handler
// records each run and fails; it returns the queue and the runs.
func startWorker(t *testing.T, qt broker.QueueType, maxAttempts int, mutate func(*worker.Config)) (string, <-chan run) {
	t.Helper()
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	a.DeleteQueues(q, retry.DLQ(q), retry.TierQueue(q, tier))
	cfg := worker.Config{
		AMQPURL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t),
		RetryDelays: []time.Duration{tier}, MaxAttempts: maxAttempts,
		HandlerTimeout: 5 * time.Second, ShutdownTimeout: 5 * time.Second,
		Dedupe: worker.DedupeOff, QueueType: qt,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(chan run, 100)
	err = w.Handle(worker.Route{Queue: q, Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		runs <- run{id: d.MessageID, attempt: d.Attempt,
			tierDeaths:  deathCount(d.Headers, retry.TierQueue(q, tier), "expired"),
			forgedDeath: deathCount(d.Headers, "elsewhere", "rejected")}
		return errors.New("always failing")
	})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !w.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("worker not ready in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return q, runs
}

// TestAttemptsCountedByWarrenHeaderOnly: warren counts attempts with its
// own header (warren-attempt) alone, so retries behave the same on
// RabbitMQ 3.10 and 4.x. A forged x-death with a large count changes
// nothing; a message that comes with warren-attempt resumes from it; the
// broker's x-death on every retry delivery says 1, since copies are
// published without it (and 4.x would not carry it on anyway).
func TestAttemptsCountedByWarrenHeaderOnly(t *testing.T) {
	t.Parallel()
	for _, qt := range []broker.QueueType{broker.Classic, broker.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			const maxAttempts = 4
			q, runs := startWorker(t, qt, maxAttempts, nil)
			a := testenv.NewAdmin(t)
			forged := amqp.Table{"x-death": []any{amqp.Table{
				"queue": "elsewhere", "reason": "rejected", "count": int64(50),
				"exchange": "", "routing-keys": []any{q}, "time": time.Now(),
			}}}
			a.Publish("", q, amqp.Publishing{MessageId: "forged-x-death", Headers: forged})
			a.Publish("", q, amqp.Publishing{MessageId: "resumed", Headers: amqp.Table{retry.AttemptHeader: int32(3)}})

			got := map[string][]run{}
			deadline := time.After(60 * time.Second)
			for len(got["forged-x-death"]) < maxAttempts || len(got["resumed"]) < 2 {
				select {
				case r := <-runs:
					got[r.id] = append(got[r.id], r)
				case <-deadline:
					t.Fatalf("runs so far: %+v", got)
				}
			}
			for i, r := range got["forged-x-death"] {
				if r.attempt != i+1 {
					t.Errorf("forged-x-death run %d has attempt %d, want %d", i+1, r.attempt, i+1)
				}
				if i > 0 && r.tierDeaths != 1 {
					t.Errorf("forged-x-death run %d: x-death count of the tier = %d, want 1", i+1, r.tierDeaths)
				}
			}
			if got["forged-x-death"][0].forgedDeath != 50 {
				t.Errorf("the first run did not see the forged x-death: %+v", got["forged-x-death"][0])
			}
			for i, r := range got["resumed"] {
				if r.attempt != 3+i {
					t.Errorf("resumed run %d has attempt %d, want %d", i+1, r.attempt, 3+i)
				}
			}
			dlq := retry.DLQ(q)
			if n := a.WaitCount(dlq, 2, 30*time.Second); n != 2 {
				t.Fatalf("dlq holds %d, want 2", n)
			}
			for _, m := range a.GetAll(dlq) {
				if n := fmt.Sprint(m.Headers[worker.HeaderAttempts]); n != fmt.Sprint(maxAttempts) {
					t.Errorf("dead letter %s: %s = %v, want %d", m.MessageId, worker.HeaderAttempts, m.Headers[worker.HeaderAttempts], maxAttempts)
				}
				if _, ok := m.Headers["x-death"]; ok {
					t.Errorf("dead letter %s carries x-death %v", m.MessageId, m.Headers["x-death"])
				}
			}
			select {
			case r := <-runs:
				t.Errorf("a run after the dead letters: %+v", r)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

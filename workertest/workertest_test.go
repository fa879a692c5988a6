package workertest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
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

// A handler that runs out of time is reported as the worker writes it:
// kind timeout.
func TestTimeoutKind(t *testing.T) {
	h := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		<-ctx.Done()
		return ctx.Err()
	})
	res := workertest.Run(context.Background(), h, workertest.Delivery(nil), workertest.Options{Timeout: 20 * time.Millisecond})
	if res.Kind != worker.KindTimeout {
		t.Fatalf("kind %q, want %q (%v)", res.Kind, worker.KindTimeout, res.Err)
	}
}

// Without a store, CommitWithDone has nothing to commit with.
func TestCommitWithDoneNeedsStore(t *testing.T) {
	var got error
	h := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		got = worker.CommitWithDone(ctx, func(redis.Pipeliner) error { return nil })
		return got
	})
	workertest.Run(context.Background(), h, workertest.Delivery(nil), workertest.Options{})
	if !errors.Is(got, worker.ErrNoAtomicStore) {
		t.Fatalf("CommitWithDone without a store: %v", got)
	}
}

// With the Redis store, a handler's CommitWithDone writes are committed
// with the done mark, and a second run of the same message is a
// duplicate whose handler does not run.
func TestCommitWithDoneAgainstRedis(t *testing.T) {
	client := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, client, prefix)
	store, err := dedupe.NewRedis(client, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	h := worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		runs++
		return worker.CommitWithDone(ctx, func(p redis.Pipeliner) error {
			return p.IncrBy(ctx, worker.RedisKey(ctx, prefix+":balance"), 5).Err()
		})
	})
	d := workertest.Delivery([]byte("x"))
	d.IdempotencyKey = dedupe.Key(prefix, "test", "m1")
	o := workertest.Options{Store: store, Logger: zaptest.NewLogger(t)}
	if res := workertest.Run(context.Background(), h, d, o); res.Outcome != worker.OutcomeAck {
		t.Fatalf("first run: %+v (%v)", res.Decision, res.Err)
	}
	balance := dedupe.SameSlot(d.IdempotencyKey, prefix+":balance")
	if v, err := client.Get(context.Background(), balance).Int(); err != nil || v != 5 {
		t.Fatalf("balance after the commit: %d, %v; want 5", v, err)
	}
	if res := workertest.Run(context.Background(), h, d, o); res.Outcome != worker.OutcomeDuplicate {
		t.Fatalf("second run: %+v, want duplicate", res.Decision)
	}
	if runs != 1 {
		t.Fatalf("handler ran %d times, want 1", runs)
	}
	if v, _ := client.Get(context.Background(), balance).Int(); v != 5 {
		t.Fatalf("balance after the duplicate: %d, want 5", v)
	}
}

// A message claimed elsewhere does not run: it would go round the first
// tier as in progress, spending no attempt.
func TestInProgressElsewhere(t *testing.T) {
	store := dedupe.NewMemory()
	d := workertest.Delivery([]byte("x"))
	if st, err := store.Claim(context.Background(), d.IdempotencyKey, "another-worker", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v, %v", st, err)
	}
	ran := false
	h := worker.HandlerFunc(func(context.Context, *worker.Delivery) error { ran = true; return nil })
	res := workertest.Run(context.Background(), h, d, workertest.Options{Store: store})
	if ran || res.Outcome != worker.OutcomeRetry || res.Kind != worker.KindInProgress || res.Delay != retry.DefaultDelays()[0] {
		t.Fatalf("ran %v, %+v; want an in-progress retry through the first tier", ran, res.Decision)
	}
}

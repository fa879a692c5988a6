package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// A worker with one route: signups published to the "events" exchange
// with routing key user.signed_up reach the "emails" queue, and each one
// is handled once, retried through the delay tiers on failure and
// dead-lettered when it cannot succeed.
func Example() {
	cfg, err := worker.FromEnv() // WARREN_AMQP_URL, WARREN_REDIS_URL, ...
	if err != nil {
		log.Fatal(err) // names the bad variable
	}
	w, err := worker.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	type signup struct {
		Email string `json:"email"`
	}
	err = w.Handle(worker.Route{
		Queue:       "emails",
		Exchange:    "events",
		BindingKeys: []string{"user.signed_up"},
		Handler: worker.JSON(func(ctx context.Context, d *worker.Delivery, s signup) error {
			if s.Email == "" {
				return worker.Permanent(errors.New("signup without an email"))
			}
			worker.Logger(ctx).Info("welcome mail sent")
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Decide tells what the worker does with a message whose handler
// returned an error, on a given attempt.
func ExampleDecide() {
	p := retry.Policy{Delays: []time.Duration{time.Second, time.Minute}, MaxAttempts: 3}
	fmt.Println(worker.Decide(nil, 1, p).Outcome)
	d := worker.Decide(errors.New("db down"), 1, p)
	fmt.Println(d.Outcome, d.Delay, d.Kind)
	d = worker.Decide(errors.New("db down"), 3, p)
	fmt.Println(d.Outcome, d.Reason)
	d = worker.Decide(worker.Permanent(errors.New("bad input")), 1, p)
	fmt.Println(d.Outcome, d.Reason)
	d = worker.Decide(worker.RetryAfter(30*time.Second, errors.New("rate limited")), 1, p)
	fmt.Println(d.Outcome, d.Delay)
	// Output:
	// ack
	// retry 1s error
	// dead_letter retries_exhausted
	// dead_letter permanent
	// retry 1m0s
}

// Middleware wraps every route's handler (Worker.Use) or one route's
// (Route.Middleware).
func ExampleMiddleware() {
	timing := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			start := time.Now()
			err := next.Handle(ctx, d)
			worker.Logger(ctx).Debug("handled", zapDuration(time.Since(start)))
			return err
		})
	}
	w, err := worker.New(worker.Config{})
	if err != nil {
		log.Fatal(err)
	}
	w.Use(timing)
	fmt.Println("middleware added")
	// Output: middleware added
}

func zapDuration(d time.Duration) zap.Field { return zap.Duration("took", d) }

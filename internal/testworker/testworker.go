// Package testworker holds what the worker programs of the multi-process
// tests (soakworker, limitworker, orderworker) share: a worker configured
// from the environment, a Redis client for the programs' own records, and
// running until SIGINT or SIGTERM.
package testworker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/worker"
)

// New returns a worker configured from the WARREN_ environment and a
// Redis client on its WARREN_REDIS_URL that never sends a command again
// after its reply was lost (a repeated INCR or RPUSH would count twice).
// tune, if not nil, adjusts the client's options first. Close the client
// when done.
func New(tune func(*redis.Options)) (*worker.Worker, *redis.Client, error) {
	cfg, err := worker.FromEnv()
	if err != nil {
		return nil, nil, err
	}
	w, err := worker.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	opts, err := redis.ParseURL(w.Config().RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%s_REDIS_URL: %w", worker.EnvPrefix, err)
	}
	opts.MaxRetries = -1
	if tune != nil {
		tune(opts)
	}
	return w, redis.NewClient(opts), nil
}

// Run runs w until SIGINT or SIGTERM, with each of also in a goroutine
// of its own until then; it returns Run's error once they have returned.
func Run(w *worker.Worker, also ...func(context.Context)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop() // first: the goroutines end with ctx
	for _, f := range also {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	return w.Run(ctx)
}

// Command limitworker is the worker process of the per-key limit test in
// internal/flowcheck. It runs one route with a concurrency limit per key
// (the "k" header) and measures, in Redis, how many of its handlers run at
// once for each key across every process of the fleet.
//
// Configuration: the WARREN_* variables (worker.FromEnv), plus
//
//	LIMIT_QUEUE     the queue to consume (required)
//	LIMIT_RUN       the run's key prefix in Redis (required)
//	LIMIT_INSTANCE  this process's name (required)
//	LIMIT_PER_KEY   Limits.Concurrency (default 2)
//	LIMIT_WORK      how long each handler works (default 40ms)
//
// Redis keys, on WARREN_REDIS_URL:
//
//	<run>:ready:<instance>  set once the worker is ready
//	<run>:cur:<key>         handlers of key running now (INCR on entry, DECR on exit)
//	<run>:max:<key>         the most ever seen in cur:<key>
//	<run>:runs              hash: message id -> handler runs that finished
//	<run>:fin               hash: message id -> when its last run finished (unix ms)
//
// SIGTERM or SIGINT drains (worker.Run) and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/internal/testworker"
	"github.com/warrenmq/warren/worker"
)

// enter counts one more handler of a key and raises its maximum, in one
// step on the server.
var enter = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local m = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > m then redis.call('SET', KEYS[2], n) end
return n`)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "limitworker:", err)
		os.Exit(1)
	}
}

func run() error {
	queue, runID, instance := os.Getenv("LIMIT_QUEUE"), os.Getenv("LIMIT_RUN"), os.Getenv("LIMIT_INSTANCE")
	if queue == "" || runID == "" || instance == "" {
		return errors.New("LIMIT_QUEUE, LIMIT_RUN and LIMIT_INSTANCE are required")
	}
	perKey, err := strconv.Atoi(envOr("LIMIT_PER_KEY", "2"))
	if err != nil || perKey < 1 {
		return fmt.Errorf("LIMIT_PER_KEY: %q is not a count >= 1", os.Getenv("LIMIT_PER_KEY"))
	}
	work, err := time.ParseDuration(envOr("LIMIT_WORK", "40ms"))
	if err != nil || work < 0 {
		return fmt.Errorf("LIMIT_WORK: %q is not a duration >= 0", os.Getenv("LIMIT_WORK"))
	}
	w, rc, err := testworker.New(nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := &handler{rc: rc, run: runID, work: work}
	err = w.Handle(worker.Route{
		Queue:   queue,
		Handler: worker.HandlerFunc(h.handle),
		Limits:  worker.Limits{Key: key, Concurrency: perKey},
	})
	if err != nil {
		return err
	}
	return testworker.Run(w, func(ctx context.Context) { announce(ctx, w, rc, runID+":ready:"+instance) })
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func key(d *worker.Delivery) string { s, _ := d.Headers["k"].(string); return s }

// announce sets the ready key once the worker is ready.
func announce(ctx context.Context, w *worker.Worker, rc *redis.Client, readyKey string) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.Ready() && rc.Set(ctx, readyKey, os.Getpid(), time.Hour).Err() == nil {
			return
		}
	}
}

type handler struct {
	rc   *redis.Client
	run  string
	work time.Duration
}

// handle counts itself in while it works, then records the message done.
func (h *handler) handle(ctx context.Context, d *worker.Delivery) error {
	k := key(d)
	cur := h.run + ":cur:" + k
	if err := enter.Run(ctx, h.rc, []string{cur, h.run + ":max:" + k}).Err(); err != nil {
		return fmt.Errorf("counting in: %w", err)
	}
	t := time.NewTimer(h.work)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	// Counted out on a context of its own: a count left behind would read
	// as a handler still running.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.rc.Decr(octx, cur).Err(); err != nil {
		return fmt.Errorf("counting out: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := h.rc.TxPipelined(octx, func(p redis.Pipeliner) error {
		p.HIncrBy(octx, h.run+":runs", d.MessageID, 1)
		p.HSet(octx, h.run+":fin", d.MessageID, time.Now().UnixMilli())
		return nil
	})
	return err
}

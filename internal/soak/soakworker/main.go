// Command soakworker is the worker process of the soak test in
// internal/soak. It runs one warren route and records every successful
// effect in Redis, so that the test can count how often each message's
// effect happened while it kills, stops and cuts things underneath.
//
// Configuration: the WARREN_* variables (worker.FromEnv), plus
//
//	SOAK_QUEUE     the queue to consume (required)
//	SOAK_RUN       the run id; effect keys are soak:<run>:... (required)
//	SOAK_INSTANCE  this process's name in effect records (required)
//	SOAK_WORK      every message first "works" for a random time below
//	               this duration (ctx permitting), so that handlers are
//	               busy when faults strike; "" or 0 means no work
//
// Each message body is JSON {"id": "...", "kind": "ok|transient|permanent|panic|slow"}:
//
//	ok         succeeds
//	transient  fails on attempt 1, then succeeds
//	permanent  returns worker.Permanent: dead-lettered at once
//	panic      panics on attempt 1, then succeeds
//	slow       sleeps 300ms (ctx permitting), then succeeds
//
// A success records its effect with one MULTI/EXEC on the WARREN_REDIS_URL
// server, inside the handler:
//
//	INCR  soak:<run>:effect:<id>        how often the effect happened
//	RPUSH soak:<run>:by:<id> <token>    who did it: instance|seq|attempt
//	SADD  soak:<run>:processed <id>     ids whose effect happened at least once
//
// The effect client never retries a command on its own (a retried INCR
// whose first reply was lost would count twice). When EXEC fails, the
// handler asks Redis whether its token made it (LPOS) before it decides:
// found means the effect happened and the handler succeeds; not found means
// it did not and the handler fails (the message is retried); no answer
// within a few seconds is logged as "soak effect uncertain" and fails.
//
// SIGTERM or SIGINT drains gracefully (worker.Run); the process exits 0
// after a drain.
package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/internal/testworker"
	"github.com/warrenmq/warren/worker"
)

// Msg is a soak message body.
type Msg struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soakworker:", err)
		os.Exit(1)
	}
}

func run() error {
	queue, runID, instance := os.Getenv("SOAK_QUEUE"), os.Getenv("SOAK_RUN"), os.Getenv("SOAK_INSTANCE")
	if queue == "" || runID == "" || instance == "" {
		return errors.New("SOAK_QUEUE, SOAK_RUN and SOAK_INSTANCE are required")
	}
	w, rc, err := testworker.New(func(opts *redis.Options) {
		opts.DialTimeout = time.Second
		opts.ReadTimeout = 2 * time.Second
		opts.WriteTimeout = 2 * time.Second
	})
	if err != nil {
		return err
	}
	defer rc.Close()

	var work time.Duration
	if v := os.Getenv("SOAK_WORK"); v != "" {
		if work, err = time.ParseDuration(v); err != nil || work < 0 {
			return fmt.Errorf("SOAK_WORK: %q is not a duration >= 0", v)
		}
	}
	h := &handler{rc: rc, run: runID, instance: instance, work: work, log: w.Logger().Named("soak")}
	err = w.Handle(worker.Route{
		Queue:   queue,
		Handler: worker.JSON(h.handle),
		// DedupeKey sees every delivery before the dedupe claim, so it is
		// where deliveries and broker redeliveries are counted. The key
		// stays the message id.
		DedupeKey: func(d *worker.Delivery) string {
			h.log.Debug("soak delivery", zap.String("message_id", d.MessageID), zap.Bool("redelivered", d.Redelivered))
			return d.MessageID
		},
	})
	if err != nil {
		return err
	}
	h.log.Info("soak worker starting", zap.String("instance", instance), zap.Int("pid", os.Getpid()))
	return testworker.Run(w)
}

type handler struct {
	rc       *redis.Client
	run      string
	instance string
	work     time.Duration
	log      *zap.Logger
	seq      atomic.Uint64
}

func (h *handler) handle(ctx context.Context, d *worker.Delivery, m Msg) error {
	if m.ID == "" {
		return worker.Permanent(errors.New("message has no id"))
	}
	if h.work > 0 {
		if err := sleep(ctx, rand.N(h.work)); err != nil {
			return err
		}
	}
	switch m.Kind {
	case "ok":
	case "transient":
		if d.Attempt < 2 {
			return fmt.Errorf("transient failure of %s on attempt %d", m.ID, d.Attempt)
		}
	case "permanent":
		return worker.Permanent(fmt.Errorf("permanent failure of %s", m.ID))
	case "panic":
		if d.Attempt == 1 {
			panic("soak: planned panic of " + m.ID)
		}
	case "slow":
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	default:
		return worker.Permanent(fmt.Errorf("unknown kind %q", m.Kind))
	}
	return h.effect(ctx, m.ID, d.Attempt)
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// effect records the message's effect once, atomically with who did it.
func (h *handler) effect(ctx context.Context, id string, attempt int) error {
	token := h.instance + "|" + strconv.FormatUint(h.seq.Add(1), 10) + "|" + strconv.Itoa(attempt)
	byKey := "soak:" + h.run + ":by:" + id
	_, err := h.rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "soak:"+h.run+":effect:"+id)
		p.RPush(ctx, byKey, token)
		p.SAdd(ctx, "soak:"+h.run+":processed", id)
		return nil
	})
	if err == nil {
		return nil
	}
	// The reply was lost or the command never ran: find out which.
	applied, known := h.lookup(ctx, byKey, token)
	switch {
	case known && applied:
		h.log.Info("soak effect confirmed after error", zap.String("id", id), zap.String("token", token), zap.Error(err))
		return nil
	case known:
		return fmt.Errorf("recording the effect of %s: %w", id, err)
	}
	h.log.Warn("soak effect uncertain", zap.String("soak", "effect_uncertain"), zap.String("id", id),
		zap.String("token", token), zap.Error(err))
	return fmt.Errorf("recording the effect of %s (outcome unknown): %w", id, err)
}

// lookup asks whether token is in the list at byKey, for up to 4s.
func (h *handler) lookup(ctx context.Context, byKey, token string) (applied, known bool) {
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			// Still ask once, on a context of our own: the answer is cheap.
		}
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, err := h.rc.LPos(qctx, byKey, token, redis.LPosArgs{}).Result()
		cancel()
		switch {
		case err == nil:
			return true, true
		case errors.Is(err, redis.Nil):
			return false, true
		}
		if ctx.Err() != nil {
			return false, false
		}
	}
	return false, false
}

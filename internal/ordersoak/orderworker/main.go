// Command orderworker is the worker process of the ordered-route test in
// internal/ordersoak. It runs one ordered route (worker.Order) and
// records in Redis, per ordering key, the sequence number of every message
// whose handler succeeded, in the order the handlers ran, so that the
// test can check each key's order across processes while it kills one.
//
// Configuration: the WARREN_* variables (worker.FromEnv), plus
//
//	ORDER_QUEUE       the route's queue; its partitions are <queue>.p<i> (required)
//	ORDER_EXCHANGE    the consistent-hash exchange publishers send to (required)
//	ORDER_PARTITIONS  how many partitions (required)
//	ORDER_PREFIX      the prefix of the Redis keys below (required)
//	ORDER_INSTANCE    this process's name (required)
//	ORDER_FAIL_EVERY  one message in this many (chosen by a hash of its
//	                  key and seq) fails its first attempt; 0 means none
//
// Each message carries headers key (its ordering key, also its routing
// key) and seq (its place in the key's sequence, from 1). A handler first
// sleeps 0-3ms, then fails when the message is one of the chosen ones
// and this is its first attempt (INCR <prefix>:failures; the route
// retries it in place), otherwise records with one MULTI/EXEC:
//
//	RPUSH <prefix>:key:<key> <seq>     the key's handled sequence
//	INCR  <prefix>:handled             all successes
//	INCR  <prefix>:by:<instance>       this process's successes
//
// The Redis client never retries a command on its own. SIGTERM or SIGINT
// drains (worker.Run) and the process exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/internal/testworker"
	"github.com/warrenmq/warren/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "orderworker:", err)
		os.Exit(1)
	}
}

func run() error {
	get := os.Getenv
	queue, exchange, prefix, instance := get("ORDER_QUEUE"), get("ORDER_EXCHANGE"), get("ORDER_PREFIX"), get("ORDER_INSTANCE")
	if queue == "" || exchange == "" || prefix == "" || instance == "" {
		return errors.New("ORDER_QUEUE, ORDER_EXCHANGE, ORDER_PREFIX and ORDER_INSTANCE are required")
	}
	partitions, err := strconv.Atoi(get("ORDER_PARTITIONS"))
	if err != nil {
		return fmt.Errorf("ORDER_PARTITIONS: %w", err)
	}
	failEvery := 0
	if v := get("ORDER_FAIL_EVERY"); v != "" {
		if failEvery, err = strconv.Atoi(v); err != nil || failEvery < 0 {
			return fmt.Errorf("ORDER_FAIL_EVERY: %q is not a number >= 0", v)
		}
	}
	w, rc, err := testworker.New(nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := &handler{rc: rc, prefix: prefix, instance: instance, failEvery: failEvery}
	err = w.Handle(worker.Route{
		Queue: queue, Exchange: exchange, Handler: h,
		Order: worker.Order{Partitions: partitions},
	})
	if err != nil {
		return err
	}
	return testworker.Run(w)
}

type handler struct {
	rc        *redis.Client
	prefix    string
	instance  string
	failEvery int
}

func (h *handler) Handle(ctx context.Context, d *worker.Delivery) error {
	key, _ := d.Headers["key"].(string)
	seq, err := strconv.Atoi(fmt.Sprint(d.Headers["seq"]))
	if key == "" || err != nil {
		return worker.Permanent(fmt.Errorf("want headers key and seq, got %v", d.Headers))
	}
	t := time.NewTimer(rand.N(3 * time.Millisecond))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	if d.Attempt == 1 && chosen(key, seq, h.failEvery) {
		if err := h.rc.Incr(ctx, h.prefix+":failures").Err(); err != nil {
			return err
		}
		return fmt.Errorf("planned failure of %s/%d on its first attempt", key, seq)
	}
	_, err = h.rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, h.prefix+":key:"+key, seq)
		p.Incr(ctx, h.prefix+":handled")
		p.Incr(ctx, h.prefix+":by:"+h.instance)
		return nil
	})
	return err
}

// chosen picks one message in every: the same ones in every process.
func chosen(key string, seq, every int) bool {
	if every <= 0 {
		return false
	}
	f := fnv.New32a()
	_, _ = fmt.Fprintf(f, "%s/%d", key, seq)
	return f.Sum32()%uint32(every) == 0
}

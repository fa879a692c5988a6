package flowcheck_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// Settings of the limit test.
const (
	limitWorkers   = 3
	limitPerKey    = 2
	limitWork      = 40 * time.Millisecond
	limitHot       = 150 // messages of the one hot key, published first
	limitColdKeys  = 30
	limitColdEach  = 5 // messages per cold key, published after the hot ones, keys round-robin
	limitConc      = 6 // handlers per worker process
	limitFirstTier = 200 * time.Millisecond
)

// TestLimitPerKeyAcrossProcesses: three worker processes consume one route
// with a limit of two handlers per key. The handlers count themselves in
// and out in Redis, so the count is the fleet's, not a process's. One hot
// key has many messages, published first, then thirty cold keys a few
// each. Every key stays at or below two at once, the hot key reaches two
// (the check can fail), every message is handled, nothing is
// dead-lettered or left in a tier, and the cold keys are not held up by
// the hot key's backlog.
func TestLimitPerKeyAcrossProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts three worker processes")
	}
	bin := testenv.BuildBinary(t, t.TempDir(), "./limitworker")
	run := testenv.Name(t)
	rc := testenv.RedisClient(t)
	testenv.DeleteRedisPrefix(t, rc, run)
	admin := testenv.NewAdmin(t)
	queue := run
	delays := []time.Duration{limitFirstTier, time.Second}
	admin.DeleteQueues(queue, retry.DLQ(queue), retry.TierQueue(queue, delays[0]), retry.TierQueue(queue, delays[1]))

	var procs []*testenv.Proc
	logDir := t.TempDir()
	for i := range limitWorkers {
		name := fmt.Sprintf("w%d", i)
		procs = append(procs, testenv.StartProc(t, bin, name, logDir,
			"WARREN_AMQP_URL="+testenv.AMQPURL(), "WARREN_REDIS_URL="+testenv.RedisURL(),
			"WARREN_DEDUPE=off", "WARREN_DEDUPE_PREFIX="+run, // the limiter's keys
			"WARREN_CONCURRENCY="+strconv.Itoa(limitConc), "WARREN_PREFETCH="+strconv.Itoa(2*limitConc),
			"WARREN_RETRY_DELAYS="+delays[0].String()+","+delays[1].String(), "WARREN_MAX_ATTEMPTS=3",
			"WARREN_LOG_LEVEL=warn",
			"LIMIT_QUEUE="+queue, "LIMIT_RUN="+run, "LIMIT_INSTANCE="+name,
			"LIMIT_PER_KEY="+strconv.Itoa(limitPerKey), "LIMIT_WORK="+limitWork.String()))
	}
	ctx := context.Background()
	waitFor(t, 60*time.Second, "the workers to be ready", func() bool {
		for _, p := range procs {
			if p.Exited() {
				t.Fatalf("%s exited during start-up: %v\n%s", p.Name, p.Err(), p.Log())
			}
		}
		n, err := rc.Exists(ctx, readyKeys(run, procs)...).Result()
		return err == nil && int(n) == len(procs)
	})

	msgs, keyOf := limitMessages()
	t0 := time.Now()
	admin.PublishBatch("", queue, msgs)
	waitFor(t, 3*time.Minute, "every message to be handled", func() bool {
		n, err := rc.HLen(ctx, run+":runs").Result()
		return err == nil && int(n) == len(msgs)
	})
	for _, p := range procs {
		p.Term(t, 30*time.Second)
	}

	runs, err := rc.HGetAll(ctx, run+":runs").Result()
	if err != nil {
		t.Fatal(err)
	}
	for id, n := range runs {
		if n != "1" {
			t.Logf("%s was handled %s times (at least once allows it)", id, n)
		}
	}
	checkLimitHeld(t, rc, run, keyOf)
	checkNotHeldUp(t, rc, run, keyOf, t0)
	for _, q := range []string{queue, retry.TierQueue(queue, delays[0]), retry.TierQueue(queue, delays[1]), retry.DLQ(queue)} {
		if n := admin.Count(q); n != 0 {
			t.Errorf("%s holds %d message(s) after the run, want 0", q, n)
		}
	}
}

func readyKeys(run string, procs []*testenv.Proc) []string {
	var keys []string
	for _, p := range procs {
		keys = append(keys, run+":ready:"+p.Name)
	}
	return keys
}

// limitMessages is the hot key's messages, then the cold keys' taking
// turns; keyOf maps each message id to its key.
func limitMessages() ([]amqp.Publishing, map[string]string) {
	keyOf := map[string]string{}
	var msgs []amqp.Publishing
	add := func(id, key string) {
		keyOf[id] = key
		msgs = append(msgs, amqp.Publishing{MessageId: id, Headers: amqp.Table{"k": key}, Body: []byte(id)})
	}
	for i := range limitHot {
		add(fmt.Sprintf("hot-%d", i), "hot")
	}
	for i := range limitColdEach {
		for k := range limitColdKeys {
			add(fmt.Sprintf("cold%d-%d", k, i), fmt.Sprintf("cold%d", k))
		}
	}
	return msgs, keyOf
}

// checkLimitHeld: no key ever had more than limitPerKey handlers at once
// across the fleet, every count went back to zero, and the hot key reached
// the limit.
func checkLimitHeld(t *testing.T, rc redis.UniversalClient, run string, keyOf map[string]string) {
	t.Helper()
	ctx := context.Background()
	keys := map[string]bool{}
	for _, k := range keyOf {
		keys[k] = true
	}
	for k := range keys {
		maxSeen, err := rc.Get(ctx, run+":max:"+k).Int()
		if err != nil {
			t.Fatalf("max of key %s: %v", k, err)
		}
		if maxSeen > limitPerKey {
			t.Errorf("key %s had %d handlers at once across the workers, limit %d", k, maxSeen, limitPerKey)
		}
		if k == "hot" && maxSeen != limitPerKey {
			t.Errorf("the hot key had at most %d handlers at once, want it to reach the limit %d", maxSeen, limitPerKey)
		}
		if cur, err := rc.Get(ctx, run+":cur:"+k).Int(); err != nil || cur != 0 {
			t.Errorf("key %s: %d handler(s) still counted in (%v)", k, cur, err)
		}
	}
}

// checkNotHeldUp: the cold keys keep their throughput while the hot key
// waits. The hot key cannot go faster than limitPerKey handlers of
// limitWork each, so its backlog takes at least limitHot*limitWork/limitPerKey
// (3 s) whatever the machine; the cold messages, published after all of
// it, need limitColdKeys*limitColdEach*limitWork of handler time spread
// over the 16 other handlers (about 0.4 s on an idle machine). Had the hot
// key's waiting messages stood in front of them in the queue or sat on
// handlers, the cold ones would finish with the hot backlog. So the check
// is that every cold message was done before the hot key was half done
// (a ratio with room for a loaded machine, no absolute time), along with
// the bound that shows the limit held the hot key back.
func checkNotHeldUp(t *testing.T, rc redis.UniversalClient, run string, keyOf map[string]string, t0 time.Time) {
	t.Helper()
	fin, err := rc.HGetAll(context.Background(), run+":fin").Result()
	if err != nil {
		t.Fatal(err)
	}
	var hot []time.Duration
	var coldLast time.Duration
	for id, v := range fin {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("finish time of %s: %q", id, v)
		}
		d := time.UnixMilli(ms).Sub(t0)
		if keyOf[id] == "hot" {
			hot = append(hot, d)
		} else if strings.HasPrefix(keyOf[id], "cold") {
			coldLast = max(coldLast, d)
		}
	}
	if len(hot) != limitHot {
		t.Fatalf("%d hot messages finished, want %d", len(hot), limitHot)
	}
	hotHalf := nth(hot, limitHot/2)
	hotLast := nth(hot, limitHot-1)
	t.Logf("after publishing began: cold keys all done at %s; hot key half done at %s, all done at %s",
		coldLast.Round(time.Millisecond), hotHalf.Round(time.Millisecond), hotLast.Round(time.Millisecond))
	if floor := time.Duration(limitHot/limitPerKey) * limitWork; hotLast < floor {
		t.Errorf("the hot key's %d messages were done in %s, faster than %d at a time allows (%s)", limitHot, hotLast, limitPerKey, floor)
	}
	if coldLast > hotHalf {
		t.Errorf("the cold keys were done at %s, after the hot key was half done (%s): they waited behind the hot key", coldLast, hotHalf)
	}
}

// nth is the k-th smallest of ds (from 0).
func nth(ds []time.Duration, k int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	return s[k]
}

// waitFor polls cond until it holds, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

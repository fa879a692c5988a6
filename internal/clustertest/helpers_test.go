package clustertest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func logger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// record is what the handlers of a test saw.
type record struct {
	mu      sync.Mutex
	done    map[string]time.Time // message id -> first success
	times   []time.Time          // every success, in order
	calls   int
	retried int
}

func newRecord() *record { return &record{done: map[string]time.Time{}} }

// handler fails the first attempt of every third message (a retry through
// a tier queue) and succeeds otherwise.
func (r *record) handler(ctx context.Context, d *worker.Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	var n int
	_, _ = fmt.Sscanf(d.MessageID, "m-%d", &n)
	if n%3 == 0 && d.Attempt == 1 {
		r.retried++
		return fmt.Errorf("first attempt of %s fails", d.MessageID)
	}
	now := time.Now()
	if _, ok := r.done[d.MessageID]; !ok {
		r.done[d.MessageID] = now
	}
	r.times = append(r.times, now)
	return nil
}

func (r *record) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.done)
}

func (r *record) doneAt(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.done[id]
	return at, ok
}

// missing lists the ids of want that no handler finished.
func (r *record) missing(want []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range want {
		if _, ok := r.done[id]; !ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// startWorker runs a worker on queue with the given broker addresses until
// the test ends, and waits until it is ready.
func startWorker(t *testing.T, amqpURL, queue string, rec *record) {
	t.Helper()
	cfg := worker.Config{
		AMQPURL:         amqpURL,
		Store:           dedupe.NewMemory(),
		RetryDelays:     worker.Delays{200 * time.Millisecond, 500 * time.Millisecond},
		MaxAttempts:     5,
		Concurrency:     8,
		HandlerTimeout:  5 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Logger:          logger(t).Named("worker"),
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(worker.Route{Queue: queue, Handler: worker.HandlerFunc(rec.handler)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("worker did not stop within 60s")
		}
	})
	deadline := time.Now().Add(120 * time.Second)
	for !w.Ready() {
		select {
		case err := <-done:
			t.Fatalf("worker stopped before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("worker not ready within 120s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dial connects to amqpURL (one address or several) for the test.
func dial(t *testing.T, amqpURL, name string) *broker.Conn {
	t.Helper()
	c, err := broker.Dial(ctxT(t, 120*time.Second), broker.Config{URL: amqpURL, Name: name, Logger: logger(t).Named(name)})
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialLogged is dial that also records the Conn's logs.
func dialLogged(t *testing.T, amqpURL, name string) (*broker.Conn, *observer.ObservedLogs) {
	t.Helper()
	core, obs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, logger(t).Core())).Named(name)
	c, err := broker.Dial(ctxT(t, 120*time.Second), broker.Config{URL: amqpURL, Name: name, Logger: log})
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, obs
}

// backedOff reports whether obs holds a failed connection attempt
// followed by a wait of at least d.
func backedOff(obs *observer.ObservedLogs, d time.Duration) bool {
	for _, e := range obs.FilterMessage("connect failed").All() {
		if wait, ok := e.ContextMap()["retry_in"].(time.Duration); ok && wait >= d {
			return true
		}
	}
	return false
}

// admin opens a plain connection to node n of the cluster.
func admin(t *testing.T, c *testenv.Cluster, n int) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(c.NodeURL(n))
	if err != nil {
		t.Fatalf("admin connection to node %d: %v", n, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// deleteQueues removes the test's queues at its end, through a node that
// runs then.
func deleteQueues(t *testing.T, c *testenv.Cluster, names ...string) {
	t.Cleanup(func() {
		for n := 1; n <= 3; n++ {
			conn, err := amqp.Dial(c.NodeURL(n))
			if err != nil {
				continue
			}
			ch, err := conn.Channel()
			if err == nil {
				for _, q := range names {
					_, _ = ch.QueueDelete(q, false, false, false)
				}
			}
			_ = conn.Close()
			return
		}
	})
}

// queueNames are the queues warren declares for q with the test's tiers.
func queueNames(q string) []string {
	return []string{q, retry.TierQueue(q, 200*time.Millisecond), retry.TierQueue(q, 500*time.Millisecond), retry.DLQ(q)}
}

// messageCount is the number of ready messages in queue, read on ch.
func messageCount(t *testing.T, ch *amqp.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	if err != nil {
		t.Fatalf("inspecting %q: %v", queue, err)
	}
	return q.Messages
}

func (r *record) successTimes() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.times...)
}

// outage returns the longest pause between two consecutive events of ts
// (in order) that ends after t0: how long a fault at t0 stopped them.
func outage(ts []time.Time, t0 time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i < len(ts); i++ {
		if ts[i].After(t0) && ts[i-1].Before(t0.Add(time.Minute)) {
			longest = max(longest, ts[i].Sub(ts[i-1]))
		}
	}
	return longest
}

package worker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// fixture is a worker on unique queues, running until the test ends.
type fixture struct {
	t      *testing.T
	w      *worker.Worker
	admin  *testenv.Admin
	queue  string
	cancel context.CancelFunc
	done   chan error
}

// testConfig is a config for tests: short tiers and timeouts, no dedupe.
func testConfig(t *testing.T) worker.Config {
	return worker.Config{
		AMQPURL:         testenv.AMQPURL(),
		Logger:          zaptest.NewLogger(t),
		RetryDelays:     []time.Duration{100 * time.Millisecond, 300 * time.Millisecond},
		MaxAttempts:     3,
		HandlerTimeout:  5 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Dedupe:          worker.DedupeOff,
	}
}

// newFixture builds a worker with cfg and the given routes. Each route's
// Queue is a suffix appended to a unique test name.
func newFixture(t *testing.T, cfg worker.Config, routes ...worker.Route) *fixture {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	f := &fixture{t: t, w: w, admin: testenv.NewAdmin(t), queue: testenv.Name(t)}
	for _, r := range routes {
		r.Queue = f.queue + r.Queue
		if r.Exchange != "" {
			r.Exchange = f.queue + r.Exchange
			f.admin.DeleteExchanges(r.Exchange)
		}
		policy := r.Retry
		if policy.Delays == nil {
			policy.Delays = cfg.RetryDelays
		}
		queues := []string{r.Queue}
		for i := range r.Order.Partitions {
			queues = append(queues, worker.PartitionQueue(r.Queue, i))
		}
		for _, q := range queues {
			f.admin.DeleteQueues(q, retry.DLQ(q))
			for _, d := range policy.WithDefaults().Delays {
				f.admin.DeleteQueues(retry.TierQueue(q, d))
			}
		}
		if err := w.Handle(r); err != nil {
			t.Fatalf("handle: %v", err)
		}
	}
	return f
}

// start runs the worker and waits until it is ready.
func (f *fixture) start() *fixture {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.w.Run(ctx) }()
	f.t.Cleanup(func() { f.stop() })
	deadline := time.Now().Add(20 * time.Second)
	for !f.w.Ready() {
		select {
		case err := <-f.done:
			f.t.Fatalf("run ended during start-up: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			f.t.Fatal("worker not ready in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// stop ends Run and returns its error; it is safe to call twice.
func (f *fixture) stop() error {
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		return err
	case <-time.After(30 * time.Second):
		f.t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (f *fixture) publish(queueSuffix string, m broker.Message) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.w.Publish(ctx, "", f.queue+queueSuffix, m); err != nil {
		f.t.Fatalf("publish: %v", err)
	}
}

// stopDrained stops the worker after n messages were published and checks
// the drain: at least inFlight handler runs finished (those under way when
// it began), and every message that did not finish is back in the queue.
// It returns how many finished.
func (f *fixture) stopDrained(n int, finished *atomic.Int32, inFlight int) int {
	f.t.Helper()
	if err := f.stop(); err != nil {
		f.t.Fatal(err)
	}
	done := int(finished.Load())
	if done < inFlight {
		f.t.Fatalf("in-flight handlers did not finish: %d", done)
	}
	left := f.admin.WaitCount(f.queue, n-done, 5*time.Second)
	if left+done != n {
		f.t.Fatalf("%d finished + %d in the queue != %d published", done, left, n)
	}
	return done
}

// recorder records handler calls.
type recorder struct {
	mu    sync.Mutex
	calls []call
	ch    chan call
}

type call struct {
	at      time.Time
	attempt int
	id      string
	body    string
	key     string
}

func newRecorder() *recorder { return &recorder{ch: make(chan call, 10000)} }

func (r *recorder) record(d *worker.Delivery) {
	c := call{at: time.Now(), attempt: d.Attempt, id: d.MessageID, body: string(d.Body), key: d.RoutingKey}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	r.ch <- c
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// wait returns the next n calls or fails after timeout.
func (r *recorder) wait(t *testing.T, n int, timeout time.Duration) []call {
	t.Helper()
	var got []call
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case c := <-r.ch:
			got = append(got, c)
		case <-deadline:
			t.Fatalf("got %d of %d handler calls", len(got), n)
		}
	}
	return got
}

// none asserts that no further call arrives within d.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case c := <-r.ch:
		t.Fatalf("unexpected handler call: %+v", c)
	case <-time.After(d):
	}
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func amqpPublishing(body string) amqp.Publishing {
	return amqp.Publishing{Body: []byte(body), MessageId: body}
}

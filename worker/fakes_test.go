package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
)

// What the fakes below record a delivery was settled with.
const (
	settledAck     = "ack"
	settledAckNow  = "ack-now"
	settledRequeue = "requeue"
	settledReject  = "reject"
)

// fakeAcks is a channel's Acknowledger: it records each tag's result, and
// drops results with broker.ErrStale once closed, as a channel that died
// in a reconnect does.
type fakeAcks struct {
	attempts atomic.Int32 // results sent, dropped ones included
	mu       sync.Mutex
	results  map[uint64]string
	closed   atomic.Bool
	settled  chan uint64
}

func newFakeAcks() *fakeAcks {
	return &fakeAcks{results: map[uint64]string{}, settled: make(chan uint64, 1024)}
}

func (a *fakeAcks) record(tag uint64, how string) error {
	a.attempts.Add(1)
	if a.closed.Load() {
		return broker.ErrStale
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.results[tag]; ok {
		return fmt.Errorf("tag %d settled twice: %s, then %s", tag, prev, how)
	}
	a.results[tag] = how
	a.settled <- tag
	return nil
}

func (a *fakeAcks) Ack(tag uint64) error    { return a.record(tag, settledAck) }
func (a *fakeAcks) AckNow(tag uint64) error { return a.record(tag, settledAckNow) }
func (a *fakeAcks) Closed() bool            { return a.closed.Load() }
func (a *fakeAcks) Nack(tag uint64, requeue bool) error {
	if requeue {
		return a.record(tag, settledRequeue)
	}
	return a.record(tag, settledReject)
}

func (a *fakeAcks) result(tag uint64) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.results[tag]
}

// waitSettled waits until n results are recorded.
func (a *fakeAcks) waitSettled(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-a.settled:
		case <-deadline:
			t.Fatalf("waiting for %d settlements: %v", n, a.snapshot())
		}
	}
}

func (a *fakeAcks) snapshot() map[uint64]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[uint64]string, len(a.results))
	for k, v := range a.results {
		out[k] = v
	}
	return out
}

// fakeSource is a consumer fed by the test.
type fakeSource struct {
	ch   chan *broker.Delivery
	once sync.Once
}

func newFakeSource(buffer int) *fakeSource {
	return &fakeSource{ch: make(chan *broker.Delivery, buffer)}
}

func (s *fakeSource) Deliveries() <-chan *broker.Delivery { return s.ch }
func (s *fakeSource) Stop()                               { s.once.Do(func() { close(s.ch) }) }
func (s *fakeSource) Close() error                        { s.Stop(); return nil }

// fakeCopies is the broker's confirmed publisher: publish says what each
// copy gets back.
type fakeCopies struct {
	mu        sync.Mutex
	published []string // queue names
	messages  []broker.Message
	publish   func(queue string, m broker.Message) error
	redeclare atomic.Int32
	// redeclareErr, when set, is what Redeclare answers.
	redeclareErr error
}

func (c *fakeCopies) PublishCopy(_ context.Context, queue string, m broker.Message) error {
	if c.publish != nil {
		if err := c.publish(queue, m); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published = append(c.published, queue)
	c.messages = append(c.messages, m)
	return nil
}

func (c *fakeCopies) Redeclare(context.Context) error {
	c.redeclare.Add(1)
	return c.redeclareErr
}

func (c *fakeCopies) queues() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.published...)
}

// flakyStore is a store whose calls can be made to fail as an
// unreachable store does.
type flakyStore struct {
	*dedupe.MemoryStore
	markFails atomic.Int32 // MarkDoneAll calls still to fail
	markOver  atomic.Bool  // MarkDoneAll stores the marks and answers ErrMarkedOver
	marks     atomic.Int32 // MarkDoneAll calls made
	releases  atomic.Int32
	extends   atomic.Int32 // ExtendAll calls made
	hang      atomic.Bool  // ExtendAll waits for its context to end

	mu   sync.Mutex
	held [][]bool // the Held flags of each MarkDoneAll call
}

// heldFlags returns the Held flags of each MarkDoneAll call so far.
func (s *flakyStore) heldFlags() [][]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]bool(nil), s.held...)
}

func (s *flakyStore) ExtendAll(ctx context.Context, reqs []dedupe.Ref, lease time.Duration) []error {
	s.extends.Add(1)
	if s.hang.Load() {
		<-ctx.Done()
		errs := make([]error, len(reqs))
		for i := range errs {
			errs[i] = ctx.Err()
		}
		return errs
	}
	return s.MemoryStore.ExtendAll(ctx, reqs, lease)
}

var errStoreDown = errors.New("dial tcp 127.0.0.1:1: connection refused")

func (s *flakyStore) MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error {
	s.marks.Add(1)
	flags := make([]bool, len(reqs))
	for i, r := range reqs {
		flags[i] = r.Held
	}
	s.mu.Lock()
	s.held = append(s.held, flags)
	s.mu.Unlock()
	if s.markFails.Add(-1) >= 0 {
		errs := make([]error, len(reqs))
		for i := range errs {
			errs[i] = errStoreDown
		}
		return errs
	}
	errs := s.MemoryStore.MarkDoneAll(ctx, reqs, ttl)
	if s.markOver.Load() {
		for i := range errs {
			errs[i] = dedupe.ErrMarkedOver
		}
	}
	return errs
}

func (s *flakyStore) Release(ctx context.Context, key, owner string) error {
	s.releases.Add(1)
	return s.MemoryStore.Release(ctx, key, owner)
}

// rig is one route's pipeline on fakes: no broker, no Redis.
type rig struct {
	t      *testing.T
	pipe   *pipeline
	src    *fakeSource
	acks   *fakeAcks
	copies *fakeCopies
	store  *flakyStore // nil without dedupe
	route  Route
	tag    atomic.Uint64
	hctx   context.Context
	cancel context.CancelFunc
	health *health
	m      *metrics
}

type rigOptions struct {
	handler     Handler
	concurrency int
	dedupe      bool
	copies      *fakeCopies
	timeout     time.Duration        // 0 means 5s
	lease       time.Duration        // 0 means a minute
	policy      retry.Policy         // zero means tiers 1s, 10s and 3 attempts
	tp          trace.TracerProvider // nil means tracing off
	ordered     bool                 // retries in place, as an ordered route's partition
	pause       Pause
	log         *zap.Logger // nil means the test's own
	dedupeKey   func(*Delivery) string
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if o.concurrency == 0 {
		o.concurrency = 2
	}
	if o.copies == nil {
		o.copies = &fakeCopies{}
	}
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	if o.lease == 0 {
		o.lease = time.Minute
	}
	if o.policy.Delays == nil {
		o.policy = retry.Policy{Delays: []time.Duration{time.Second, 10 * time.Second}, MaxAttempts: 3}
	}
	route := Route{Queue: "q", Name: "q", Handler: o.handler, Concurrency: o.concurrency, Prefetch: 2 * o.concurrency,
		Timeout: o.timeout, Retry: o.policy.WithDefaults(), Pause: o.pause, DedupeKey: o.dedupeKey}
	if o.ordered {
		route.Order = Order{Partitions: 1}
	}
	r := &rig{t: t, src: newFakeSource(64), acks: newFakeAcks(), copies: o.copies, route: route, health: &health{}}
	log := o.log
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	m := newMetrics()
	if err := m.register(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	c := pipelineConfig{route: route, handler: o.handler, src: r.src, copies: r.copies, ttl: time.Hour,
		prefix: "test", host: "host", health: r.health, log: log, metrics: m.forQueue("q"), tracer: newProcessTracer(o.tp, "q")}
	if o.dedupe {
		r.store = &flakyStore{MemoryStore: dedupe.NewMemory()}
		c.claims = &claims{store: r.store, lease: o.lease, log: log, keeper: newKeeper(r.store, o.lease, log, r.health)}
	}
	r.m = m
	r.pipe = newPipeline(c)
	r.hctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	return r
}

func (r *rig) start() { r.pipe.start(r.hctx) }

// deliver hands the pipeline a message with the given id (and the id as
// its body) and returns its tag.
func (r *rig) deliver(id string, headers map[string]any) uint64 {
	return r.deliverBody(id, []byte(id), headers)
}

func (r *rig) deliverBody(id string, body []byte, headers map[string]any) uint64 {
	tag := r.tag.Add(1)
	r.src.ch <- &broker.Delivery{Message: broker.Message{MessageID: id, Body: body, Headers: headers},
		Queue: "q", RoutingKey: "q", Acknowledger: r.acks, DeliveryTag: tag}
	return tag
}

// key is the dedupe key of the message with id.
func (r *rig) key(id string) string { return dedupe.Key("test", "q", id) }

// close drains the pipeline as Run does.
func (r *rig) close() { r.pipe.close() }

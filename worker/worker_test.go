package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/worker"
)

func TestAckOnSuccess(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, testConfig(t), worker.Route{Queue: "", Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		return nil
	})}).start()
	const n = 50
	for i := 0; i < n; i++ {
		f.publish("", broker.Message{Body: []byte(fmt.Sprint(i))})
	}
	got := rec.wait(t, n, 20*time.Second)
	for _, c := range got {
		if c.attempt != 1 {
			t.Fatalf("first delivery has attempt %d", c.attempt)
		}
	}
	if err := f.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := f.admin.Count(f.queue); n != 0 {
		t.Fatalf("%d messages left after success", n)
	}
}

func TestPoolRunsConcurrencyHandlersAtOnce(t *testing.T) {
	t.Parallel()
	const conc = 6
	var running, peak atomic.Int32
	release := make(chan struct{})
	rec := newRecorder()
	cfg := testConfig(t)
	cfg.Concurrency = conc
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		rec.record(d)
		<-release
		running.Add(-1)
		return nil
	})}).start()
	for i := 0; i < 3*conc; i++ {
		f.publish("", broker.Message{})
	}
	rec.wait(t, conc, 20*time.Second) // conc handlers are blocked at once
	rec.none(t, 300*time.Millisecond) // and no more start
	if p := peak.Load(); p != conc {
		t.Fatalf("peak concurrency %d, want %d", p, conc)
	}
	close(release)
	rec.wait(t, 2*conc, 20*time.Second)
	if p := peak.Load(); p != conc {
		t.Fatalf("peak concurrency %d, want %d", p, conc)
	}
}

func TestPanicIsRecoveredAndRetried(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, testConfig(t), worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		if d.Attempt == 1 {
			panic("boom")
		}
		return nil
	})}).start()
	f.publish("", broker.Message{Body: []byte("x")})
	got := rec.wait(t, 2, 20*time.Second)
	if got[0].attempt != 1 || got[1].attempt != 2 {
		t.Fatalf("attempts %d, %d; want 1, 2", got[0].attempt, got[1].attempt)
	}
	rec.none(t, 500*time.Millisecond)
}

func TestHandlerTimeoutDeadLettersAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	cfg := testConfig(t)
	cfg.HandlerTimeout = 100 * time.Millisecond
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		<-ctx.Done()
		return ctx.Err()
	})}).start()
	f.publish("", broker.Message{Body: []byte("slow")})
	rec.wait(t, 3, 20*time.Second)
	dlq := f.queue + ".dlq"
	if got := f.admin.WaitCount(dlq, 1, 10*time.Second); got != 1 {
		t.Fatalf("dlq holds %d, want 1", got)
	}
	m, _ := f.admin.Get(dlq)
	if kind := m.Headers[worker.HeaderErrorKind]; kind != worker.KindTimeout {
		t.Fatalf("error kind %v, want timeout", kind)
	}
	rec.none(t, 500*time.Millisecond)
}

func TestDrainFinishesInFlightAndRequeuesTheRest(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 100)
	var finished atomic.Int32
	cfg := testConfig(t)
	cfg.Concurrency = 2
	cfg.Prefetch = 10
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		finished.Add(1)
		return nil
	})}).start()
	const n = 10
	for i := 0; i < n; i++ {
		f.publish("", broker.Message{})
	}
	<-started
	<-started
	f.stopDrained(n, &finished, 2)
}

func TestShutdownTimeoutCancelsHandlers(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	cfg := testConfig(t)
	cfg.ShutdownTimeout = 200 * time.Millisecond
	cfg.HandlerTimeout = time.Minute
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})}).start()
	f.publish("", broker.Message{})
	<-started
	begin := time.Now()
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Fatalf("drain took %s", took)
	}
	// The cancelled handler's message was not acked: it is back in Q or
	// in a retry tier, never gone.
	waitUntil(t, 10*time.Second, func() bool {
		return f.admin.Count(f.queue)+f.admin.Count(f.queue+".retry.100ms") == 1
	})
}

func TestReconnectResumesProcessing(t *testing.T) {
	t.Parallel()
	proxy, url := testenv.AMQPProxy(t)
	rec := newRecorder()
	cfg := testConfig(t)
	cfg.AMQPURL = url
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		return nil
	})}).start()
	admin := f.admin
	pub := func(i int) {
		admin.Publish("", f.queue, amqpPublishing(fmt.Sprint(i)))
	}
	for i := 0; i < 10; i++ {
		pub(i)
	}
	rec.wait(t, 10, 20*time.Second)
	proxy.Cut()
	for i := 10; i < 20; i++ {
		pub(i)
	}
	// Messages of the first batch whose acks were still on their way at
	// the cut come again (at least once); wait for every new one.
	seen := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for missing := 10; missing > 0; {
		select {
		case c := <-rec.ch:
			var i int
			if _, err := fmt.Sscan(c.body, &i); err == nil && i >= 10 && !seen[c.body] {
				seen[c.body] = true
				missing--
			}
		case <-deadline:
			t.Fatalf("after reconnect only %d of messages 10..19 were processed", len(seen))
		}
	}
	waitUntil(t, 10*time.Second, f.w.Ready)
}

func TestRunFailsOnDrift(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.QueueType = broker.Classic
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })})
	// Someone declared the queue before us without a dead-letter target.
	ch := testenv.NewAdmin(t)
	ch.DeclareQueue(f.queue)
	err := f.w.Run(context.Background())
	var drift *broker.DriftError
	if !errors.As(err, &drift) || drift.Name != f.queue {
		t.Fatalf("want a drift error naming %q, got %v", f.queue, err)
	}
}

package flowcheck_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// Settings of the outage test.
const (
	outage = 30 * time.Second
	// pauseMax is the routes' Pause.MaxBackoff: once the dependency is
	// back, the next probe or trial comes within it.
	pauseMax = 2 * time.Second
	// resumeBound is how soon after the dependency is back the first
	// message must succeed: pauseMax for the probe's wait, and the rest
	// for subscribing again and a loaded machine.
	resumeBound = 10 * time.Second
)

var outageDelays = []time.Duration{time.Second, 5 * time.Second}

// TestDependencyDownFor30s: a route with retry tiers of 1s and 5s and
// three attempts calls a dependency (a TCP service) that is down for 30
// s, while messages flow in before, during and after the outage. Nothing
// is dead-lettered, every message is handled, and the first message
// succeeds within seconds after the dependency is back; while it is
// down, the route shows as paused in warren_route_paused and the worker
// is not ready. Twice: a handler that says Unavailable, with a probe
// function; and a handler that returns plain errors, paused by
// Pause.After and probing with trial messages.
func TestDependencyDownFor30s(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a 30 s outage")
	}
	t.Run("unavailable-probe", func(t *testing.T) {
		t.Parallel()
		testOutage(t, true)
	})
	t.Run("failures-trial", func(t *testing.T) {
		t.Parallel()
		testOutage(t, false)
	})
}

func testOutage(t *testing.T, unavailable bool) {
	dep := startDependency(t)
	route := worker.Route{
		Queue: testenv.Name(t), Concurrency: 4, Prefetch: 8,
		Retry: retry.Policy{Delays: outageDelays, MaxAttempts: 3},
		Pause: worker.Pause{MinBackoff: 500 * time.Millisecond, MaxBackoff: pauseMax},
		Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			err := dep.call(ctx, d.MessageID)
			if err != nil && unavailable {
				return worker.Unavailable(err)
			}
			return err
		}),
	}
	if unavailable {
		route.Pause.Probe = func(ctx context.Context) error { return dep.call(ctx, "") }
	} else {
		route.Pause.After = 3
	}
	w, q := runOutageWorker(t, route)
	reg := w.Registry()

	var published []string
	publish := func(n int, every time.Duration) {
		for range n {
			id := fmt.Sprintf("m%d", len(published))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := w.Publish(ctx, "", q, broker.Message{MessageID: id, Body: []byte(id)}); err != nil {
				t.Fatalf("publish %s: %v", id, err)
			}
			cancel()
			published = append(published, id)
			// The pace of the traffic, not a wait for a condition.
			time.Sleep(every)
		}
	}
	publish(20, 100*time.Millisecond) // before: handled as they come
	dep.setDown(true)
	downAt := time.Now()
	// During: one a second, so that the queue stays short and the same
	// few messages are the ones that meet the outage again and again.
	var sawPaused bool
	for time.Since(downAt) < outage-time.Second {
		publish(1, time.Second)
		sawPaused = sawPaused || (testenv.MetricValue(t, reg, "warren_route_paused", q) == 1 && !w.Ready())
	}
	if !sawPaused {
		t.Errorf("the route never showed as paused (warren_route_paused 1, not ready) during the %s outage", outage)
	}
	waitFor(t, outage, "the outage's end", func() bool { return time.Since(downAt) >= outage })
	if v := testenv.MetricValue(t, reg, "warren_route_paused", q); v != 1 || w.Ready() {
		t.Errorf("at the outage's end: warren_route_paused %v, ready %v; want 1, false", v, w.Ready())
	}
	upAt := dep.setDown(false)
	publish(10, 100*time.Millisecond) // after

	admin := testenv.NewAdmin(t)
	waitFor(t, 60*time.Second, "every message to be handled", func() bool {
		if n := admin.Count(retry.DLQ(q)); n > 0 {
			t.Fatalf("%d message(s) dead-lettered", n)
		}
		return dep.handled(published)
	})
	first := dep.firstSuccessAfter(upAt)
	t.Logf("%d messages; the dependency was down %s; the first success came %s after it was back",
		len(published), upAt.Sub(downAt).Round(time.Millisecond), first.Sub(upAt).Round(time.Millisecond))
	if took := first.Sub(upAt); took > resumeBound {
		t.Errorf("the first success came %s after the dependency was back, want within %s (MaxBackoff %s)", took, resumeBound, pauseMax)
	}
	if dups := dep.duplicates(); len(dups) > 0 {
		t.Logf("handled more than once (at least once allows it): %v", dups)
	}
	waitFor(t, 20*time.Second, "the route to resume", func() bool {
		return testenv.MetricValue(t, reg, "warren_route_paused", q) == 0 && w.Ready()
	})
	if v := testenv.MetricValue(t, reg, "warren_route_pauses_total", q); v < 1 {
		t.Errorf("warren_route_pauses_total = %v, want at least 1", v)
	}
	if n := admin.Count(retry.DLQ(q)); n != 0 {
		t.Errorf("%d message(s) dead-lettered", n)
	}
	for _, name := range []string{q, retry.TierQueue(q, outageDelays[0]), retry.TierQueue(q, outageDelays[1])} {
		if n := admin.Count(name); n != 0 {
			t.Errorf("%s holds %d message(s) after every message was handled", name, n)
		}
	}
}

// runOutageWorker runs a worker with route r until the test ends and
// returns it with the route's queue.
func runOutageWorker(t *testing.T, r worker.Route) (*worker.Worker, string) {
	t.Helper()
	admin := testenv.NewAdmin(t)
	admin.DeleteQueues(r.Queue, retry.DLQ(r.Queue), retry.TierQueue(r.Queue, outageDelays[0]), retry.TierQueue(r.Queue, outageDelays[1]))
	w, err := worker.New(worker.Config{
		AMQPURL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t),
		HandlerTimeout: 5 * time.Second, ShutdownTimeout: 5 * time.Second, Dedupe: worker.DedupeOff,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	waitFor(t, 30*time.Second, "the worker to be ready", w.Ready)
	return w, r.Queue
}

// dependency is a TCP service that handlers call: a line with a message
// id, answered "ok" once it has done the message's work; an empty line
// is a health check. While down, it hangs up on every connection
// without an answer, as a proxy in front of a dead backend does.
type dependency struct {
	ln   net.Listener
	down atomic.Bool
	wg   sync.WaitGroup

	mu    sync.Mutex
	done  map[string]int // message id -> times its work was done
	times []time.Time    // when each piece of work was done
}

func startDependency(t *testing.T) *dependency {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dependency{ln: ln, done: map[string]int{}}
	d.wg.Add(1)
	go d.accept()
	t.Cleanup(func() { _ = ln.Close(); d.wg.Wait() })
	return d
}

func (d *dependency) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.serve(c) }()
	}
}

func (d *dependency) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || d.down.Load() {
		return
	}
	if id := strings.TrimSpace(line); id != "" {
		d.mu.Lock()
		d.done[id]++
		d.times = append(d.times, time.Now())
		d.mu.Unlock()
	}
	_, _ = c.Write([]byte("ok\n"))
}

// setDown takes the service down or brings it back, and returns when.
func (d *dependency) setDown(down bool) time.Time {
	d.down.Store(down)
	return time.Now()
}

// call asks the service to do the work of message id ("" checks its
// health).
func (d *dependency) call(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", d.ln.Addr().String())
	if err != nil {
		return fmt.Errorf("dependency: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(id + "\n")); err != nil {
		return fmt.Errorf("dependency: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("dependency: no answer: %w", err)
	}
	if line != "ok\n" {
		return errors.New("dependency: unexpected answer " + line)
	}
	return nil
}

// handled reports whether the work of every id was done.
func (d *dependency) handled(ids []string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		if d.done[id] == 0 {
			return false
		}
	}
	return true
}

func (d *dependency) duplicates() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for id, n := range d.done {
		if n > 1 {
			out[id] = n
		}
	}
	return out
}

// firstSuccessAfter is when the first piece of work after t was done.
func (d *dependency) firstSuccessAfter(t time.Time) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, at := range d.times {
		if !at.Before(t) {
			return at
		}
	}
	return time.Time{}
}

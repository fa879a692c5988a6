package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Settings of the consume cases.
const (
	baselineConsumers = 8
	baselinePrefetch  = 100
	ceilingAckEvery   = 50
	consumeConc       = 8
	consumePrefetch   = 100
	ioConc            = 32
	ioPrefetch        = 512
	ioWork            = 2 * time.Millisecond
	// stuckAfter is how long a worker may take to return from Run after
	// its context ended before the round fails as a stuck shutdown. The
	// handlers here finish at once, so the drain should be quick; the
	// worker's own shutdown timeout is 30s.
	stuckAfter = 45 * time.Second
	// slowStop is a stop time worth a warning.
	slowStop = 5 * time.Second
)

// roundTimeout bounds the timed section of a round of n messages.
func roundTimeout(n int) time.Duration { return time.Minute + time.Duration(n)*2*time.Millisecond }

// counter counts handler calls and closes done at the target.
type counter struct {
	target int64
	calls  atomic.Int64
	done   chan struct{}
	first  atomic.Int64 // unix nanoseconds of the first call
}

func newCounter(target int) *counter {
	return &counter{target: int64(target), done: make(chan struct{})}
}

// enter records the first call's time.
func (c *counter) enter() {
	if c.first.Load() == 0 {
		c.first.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// hit counts a finished call.
func (c *counter) hit() {
	if c.calls.Add(1) == c.target {
		close(c.done)
	}
}

// elapsed is the time from start until now, or with steady from the
// first call until now.
func (c *counter) elapsed(start time.Time, steady bool) time.Duration {
	took := time.Since(start)
	if steady {
		took -= c.firstAfter(start)
	}
	return took
}

// timedFrom says, for a steady round, where its clock started.
func timedFrom(steady bool, first string) string {
	if !steady {
		return ""
	}
	return " (timed from the first " + first + ")"
}

// firstAfter is the time from start to the first call.
func (c *counter) firstAfter(start time.Time) time.Duration {
	f := c.first.Load()
	if f == 0 {
		return 0
	}
	return time.Unix(0, f).Sub(start)
}

// waitFor waits for done, ctx, an early result on failed, or timeout.
func waitFor(ctx context.Context, done <-chan struct{}, failed <-chan error, timeout time.Duration, progress func() string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case err := <-failed:
		if err == nil {
			err = errors.New("returned nil")
		}
		return fmt.Errorf("worker Run ended before the messages were handled: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("timed out after %s: %s", timeout, progress())
	}
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// plainSpec describes a plain amqp091-go consume round.
type plainSpec struct {
	kind       string
	goroutines int // ranging over the deliveries
	prefetch   int
	// ackEvery 1 acks each delivery; above 1 (with one goroutine), a
	// multiple-ack goes out every ackEvery deliveries and for the last.
	ackEvery int
	work     func() // run per delivery before its ack, or nil
	// steady times the round from the first delivery instead of from
	// before dialing: the pool's rate, without connecting.
	steady bool
}

// baselineConsume consumes with plain amqp091-go: one channel, prefetch
// 100, 8 goroutines ranging over the deliveries, one ack per message.
func (e *env) baselineConsume(ctx context.Context, round int) (Round, error) {
	return e.plainConsume(ctx, round, plainSpec{kind: "baseline-consume", goroutines: baselineConsumers, prefetch: baselinePrefetch, ackEvery: 1})
}

// ceilingConsume is the broker's ceiling for a consumer that does no work:
// one goroutine on one channel, prefetch 100, a multiple-ack every 50
// deliveries (and for the last one). It is a reference, not a target.
func (e *env) ceilingConsume(ctx context.Context, round int) (Round, error) {
	return e.plainConsume(ctx, round, plainSpec{kind: "ceiling-consume", goroutines: 1, prefetch: baselinePrefetch, ackEvery: ceilingAckEvery})
}

// baselineIO is io-bound done with plain amqp091-go: 32 goroutines on one
// channel with io-bound's prefetch, each waiting 2 ms per delivery and then
// acking it.
func (e *env) baselineIO(ctx context.Context, round int) (Round, error) {
	waits := e.newSleepLog(e.opts.Messages)
	r, err := e.plainConsume(ctx, round, plainSpec{kind: "baseline-io", goroutines: ioConc, prefetch: ioPrefetch, ackEvery: 1, steady: true,
		work: func() { waits.sleep(ioWork) }})
	if err == nil {
		r.Detail = joinNonEmpty(r.Detail, waits.summary(), waits.busy(r.Value, ioConc), fmt.Sprintf("%.2f of %.0f msg/s", r.Value/ioReference, ioReference))
	}
	return r, err
}

// ceilingIO is io-bound without a broker: 32 goroutines that each sleep
// 2 ms until they have slept once per message. It shows how close this
// machine's timers come to the theoretical rate; a reference, not a target.
func (e *env) ceilingIO(ctx context.Context, _ int) (Round, error) {
	n := e.opts.Messages
	var left atomic.Int64
	left.Store(int64(n))
	waits := e.newSleepLog(n)
	var wg sync.WaitGroup
	start := time.Now()
	for range ioConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				waits.sleep(ioWork)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return Round{}, err
	}
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: int(waits.n.Load()), Elapsed: elapsed}
	r.Detail = joinNonEmpty(fmt.Sprintf("%d sleeps in %s", n, elapsed.Round(time.Millisecond)), waits.summary(),
		fmt.Sprintf("%.2f of %.0f msg/s", r.Value/ioReference, ioReference))
	return r, nil
}

// plainConsume consumes a filled queue with plain amqp091-go as s says.
// The clock starts before dialing, as warren's starts before its Run
// connects.
func (e *env) plainConsume(ctx context.Context, round int, s plainSpec) (Round, error) {
	n := e.opts.Messages
	q := e.name(s.kind, round)
	if err := e.declarePlain(q); err != nil {
		return Round{}, err
	}
	defer e.deleteQueues(q)
	if err := e.fill(ctx, q, n, BodySize); err != nil {
		return Round{}, err
	}
	start, cpu := time.Now(), startCPU()
	conn, err := dial(e.opts.AMQPURL, "warren-bench-"+s.kind)
	if err != nil {
		return Round{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return Round{}, fmt.Errorf("opening a channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return Round{}, fmt.Errorf("setting prefetch: %w", err)
	}
	cnt := newCounter(n)
	var ackErrs atomic.Int64
	tag := "warren-bench-" + s.kind
	deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		return Round{}, fmt.Errorf("consuming: %w", err)
	}
	var wg sync.WaitGroup
	var seen atomic.Int64
	for range s.goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				cnt.enter()
				if s.work != nil {
					s.work()
				}
				k := seen.Add(1)
				var err error
				switch {
				case s.ackEvery == 1:
					err = d.Ack(false)
				case k%int64(s.ackEvery) == 0 || k == int64(n):
					err = d.Ack(true)
				}
				if err != nil {
					ackErrs.Add(1)
				}
				cnt.hit()
			}
		}()
	}
	err = waitFor(ctx, cnt.done, nil, roundTimeout(n), func() string {
		return fmt.Sprintf("%d of %d acked", cnt.calls.Load(), n)
	})
	elapsed, cpuUsed := cnt.elapsed(start, s.steady), cpu.perMessage(n)
	_ = ch.Cancel(tag, false)
	_ = ch.Close()
	wg.Wait()
	if err != nil {
		return Round{}, err
	}
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: int(cnt.calls.Load()), Elapsed: elapsed,
		Detail: joinNonEmpty(fmt.Sprintf("%d msgs in %s%s; first delivery after %s (includes connecting)", n, elapsed.Round(time.Millisecond),
			timedFrom(s.steady, "delivery"), cnt.firstAfter(start).Round(100*time.Microsecond)), cpuUsed)}
	if k := ackErrs.Load(); k > 0 {
		return r, fmt.Errorf("%d ack(s) failed", k)
	}
	if r.Processed != n {
		return r, fmt.Errorf("acked %d message(s), want %d", r.Processed, n)
	}
	if err := e.expectEmpty(q); err != nil {
		return r, err
	}
	return r, nil
}

// workerRound is one warren worker run on a filled queue.
type workerRound struct {
	e       *env
	w       *worker.Worker
	queue   string
	topo    broker.Topology
	cancel  context.CancelFunc
	runErr  chan error
	started time.Time
	stopped bool
}

// workerConfig is the configuration of every bench worker.
func (e *env) workerConfig(conc, prefetch int) worker.Config {
	return worker.Config{
		AMQPURL:     e.opts.AMQPURL,
		RedisURL:    e.opts.RedisURL,
		Concurrency: conc,
		Prefetch:    prefetch,
		Dedupe:      worker.DedupeOff,
		QueueType:   e.qtype,
		Logger:      zap.NewNop(),
	}
}

// prepareWorker builds a worker with one route on a fresh queue, declares
// the route's topology as warren does and fills the queue with n
// messages of size bytes. Call cleanup afterwards, even on error.
func (e *env) prepareWorker(ctx context.Context, kind string, round int, cfg worker.Config, h worker.Handler, n, size int) (*workerRound, error) {
	wr := &workerRound{e: e, queue: e.name(kind, round)}
	w, err := worker.New(cfg)
	if err != nil {
		return wr, fmt.Errorf("worker.New: %w", err)
	}
	if err := w.Handle(worker.Route{Queue: wr.queue, Handler: h}); err != nil {
		return wr, fmt.Errorf("worker.Handle: %w", err)
	}
	wr.w = w
	wr.topo = w.Topology()
	if err := e.declareTopology(wr.topo); err != nil {
		return wr, err
	}
	if err := e.fill(ctx, wr.queue, n, size); err != nil {
		return wr, err
	}
	return wr, nil
}

// start starts Run and the clock.
func (wr *workerRound) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	wr.cancel = cancel
	wr.runErr = make(chan error, 1)
	wr.started = time.Now()
	go func() { wr.runErr <- wr.w.Run(runCtx) }()
}

// stop ends Run's context and waits for Run to return.
func (wr *workerRound) stop() (time.Duration, error) {
	if wr.cancel == nil || wr.stopped {
		return 0, nil
	}
	wr.stopped = true
	t := time.Now()
	wr.cancel()
	select {
	case err := <-wr.runErr:
		took := time.Since(t)
		if err != nil {
			return took, fmt.Errorf("worker Run returned an error: %w", err)
		}
		if took > slowStop {
			wr.e.warn("%s: worker took %s to stop", wr.queue, took.Round(time.Millisecond))
		}
		return took, nil
	case <-time.After(stuckAfter):
		return stuckAfter, fmt.Errorf("stuck shutdown: worker Run did not return within %s after its context ended", stuckAfter)
	}
}

// cleanup stops the worker if needed and deletes the queues.
func (wr *workerRound) cleanup() {
	if _, err := wr.stop(); err != nil {
		wr.e.warn("%s: %v", wr.queue, err)
	}
	if len(wr.topo.Queues) > 0 {
		wr.e.deleteQueues(queueNames(wr.topo)...)
	} else {
		wr.e.deleteQueues(wr.queue)
	}
}

// verify checks, after stop, that the queue and its retry tiers and
// dead-letter queue are empty and that the worker settled exactly n
// messages, all with an ack.
func (wr *workerRound) verify(n int) error {
	names := queueNames(wr.topo)
	if err := wr.e.expectEmpty(names...); err != nil {
		return err
	}
	out := outcomes(wr.w, wr.queue)
	total := 0.0
	for _, v := range out {
		total += v
	}
	if out[string(worker.OutcomeAck)] != float64(n) || total != float64(n) {
		return fmt.Errorf("worker settled %v, want %d acks and nothing else", out, n)
	}
	return nil
}

// outcomes reads warren_messages_total of queue by outcome from the
// worker's registry.
func outcomes(w *worker.Worker, queue string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := w.Registry().Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "warren_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var q, o string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "queue":
					q = l.GetValue()
				case "outcome":
					o = l.GetValue()
				}
			}
			if q == queue {
				out[o] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// rateSpec describes a warren throughput round.
type rateSpec struct {
	kind        string
	concurrency int
	prefetch    int
	dedupe      bool
	traced      bool // every message sampled, spans dropped by the exporter
	work        func(ctx context.Context)
	steady      bool // time from the first handler call (see plainSpec)
}

func (e *env) warrenConsume(ctx context.Context, round int) (Round, error) {
	return e.warrenRate(ctx, round, rateSpec{kind: "warren-consume", concurrency: consumeConc, prefetch: consumePrefetch})
}

func (e *env) warrenConsumeTraced(ctx context.Context, round int) (Round, error) {
	return e.warrenRate(ctx, round, rateSpec{kind: "warren-consume-traced", concurrency: consumeConc, prefetch: consumePrefetch, traced: true})
}

func (e *env) warrenConsumeDedupe(ctx context.Context, round int) (Round, error) {
	return e.warrenRate(ctx, round, rateSpec{kind: "warren-consume-dedupe", concurrency: consumeConc, prefetch: consumePrefetch, dedupe: true})
}

func (e *env) ioBound(ctx context.Context, round int) (Round, error) {
	waits := e.newSleepLog(e.opts.Messages)
	r, err := e.warrenRate(ctx, round, rateSpec{kind: "io-bound", concurrency: ioConc, prefetch: ioPrefetch, steady: true,
		work: func(context.Context) { waits.sleep(ioWork) }})
	if err == nil {
		r.Detail = joinNonEmpty(r.Detail, waits.summary(), waits.busy(r.Value, ioConc), fmt.Sprintf("%.2f of %.0f msg/s", r.Value/ioReference, ioReference))
	}
	return r, err
}

// sleepLog records how long each 2 ms wait of a round really took: the
// io-bound rate can only be as good as the timers behind the waits.
type sleepLog struct {
	took    []time.Duration
	n       atomic.Int64
	syscall bool // wait in a blocking nanosleep instead of time.Sleep
}

func (e *env) newSleepLog(n int) *sleepLog {
	return &sleepLog{took: make([]time.Duration, n), syscall: e.opts.IOWait == WaitSyscall}
}

// sleep waits for d and records how long it took.
func (l *sleepLog) sleep(d time.Duration) {
	t := time.Now()
	if l.syscall {
		blockingSleep(d)
	} else {
		time.Sleep(d)
	}
	if i := l.n.Add(1) - 1; i < int64(len(l.took)) {
		l.took[i] = time.Since(t)
	}
}

// recorded is the waits recorded so far.
func (l *sleepLog) recorded() []time.Duration { return l.took[:min(int(l.n.Load()), len(l.took))] }

// mean is the average recorded wait.
func (l *sleepLog) mean() time.Duration {
	took := l.recorded()
	if len(took) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	return sum / time.Duration(len(took))
}

// busy says how much of the pool's time went to the handlers' waits: the
// rate the waits as they really took allow, against the rate measured.
func (l *sleepLog) busy(rate float64, handlers int) string {
	m := l.mean()
	if m <= 0 {
		return ""
	}
	allowed := float64(handlers) / m.Seconds()
	return fmt.Sprintf("those waits allow %.0f msg/s: the pool ran at %.1f%% of that", allowed, 100*rate/allowed)
}

// summary is the mean, median and 90th percentile of the recorded waits.
func (l *sleepLog) summary() string {
	took := slices.Clone(l.recorded())
	if len(took) == 0 {
		return ""
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[int(p*float64(len(took)-1))].Round(time.Microsecond) }
	return fmt.Sprintf("each %s wait took %s on average (median %s, p90 %s)", ioWork,
		l.mean().Round(time.Microsecond), q(0.5), q(0.9))
}

// warrenRate runs a worker with one route on a filled queue and measures
// from Run's start (steady: from the first handler call) until the handler
// has finished for every message.
func (e *env) warrenRate(ctx context.Context, round int, s rateSpec) (Round, error) {
	n := e.opts.Messages
	cfg := e.workerConfig(s.concurrency, s.prefetch)
	prefix := ""
	if s.dedupe {
		if err := e.pingRedis(ctx); err != nil {
			return Round{}, err
		}
		prefix = "warren-bench:" + uniqueSuffix()
		cfg.Dedupe = worker.DedupeOn
		cfg.DedupePrefix = prefix
	}
	if s.traced {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(discardSpans{}))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		cfg.TracerProvider = tp
	}
	cnt := newCounter(n)
	h := worker.HandlerFunc(func(ctx context.Context, _ *worker.Delivery) error {
		cnt.enter()
		if s.work != nil {
			s.work(ctx)
		}
		cnt.hit()
		return nil
	})
	if s.dedupe {
		// Registered first, so it runs after the worker has stopped.
		defer func() {
			if _, err := e.deleteKeys(context.Background(), prefix); err != nil {
				e.warn("%v", err)
			}
		}()
	}
	wr, err := e.prepareWorker(ctx, s.kind, round, cfg, h, n, BodySize)
	defer wr.cleanup()
	if err != nil {
		return Round{}, err
	}
	cpu := startCPU()
	wr.start(ctx)
	err = waitFor(ctx, cnt.done, wr.runErr, roundTimeout(n), func() string {
		return fmt.Sprintf("the handler finished %d of %d", cnt.calls.Load(), n)
	})
	elapsed, cpuUsed := cnt.elapsed(wr.started, s.steady), cpu.perMessage(n)
	stopTook, stopErr := wr.stop()
	if err != nil {
		return Round{}, err
	}
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: int(cnt.calls.Load()), Elapsed: elapsed,
		Detail: joinNonEmpty(fmt.Sprintf("%d msgs in %s%s; first handler call after %s (includes connecting); stop took %s",
			n, elapsed.Round(time.Millisecond), timedFrom(s.steady, "handler call"), cnt.firstAfter(wr.started).Round(100*time.Microsecond),
			stopTook.Round(time.Millisecond)), cpuUsed)}
	if stopErr != nil {
		return r, stopErr
	}
	if r.Processed != n {
		return r, fmt.Errorf("the handler ran %d time(s) for %d messages", r.Processed, n)
	}
	if err := wr.verify(n); err != nil {
		return r, err
	}
	if s.dedupe {
		keys, err := e.deleteKeys(ctx, prefix)
		if err != nil {
			return r, err
		}
		if keys != n {
			return r, fmt.Errorf("found %d dedupe key(s) under %q, want one done mark per message (%d)", keys, prefix, n)
		}
	}
	return r, nil
}

// memoryInFlight holds InFlight messages of 4 KiB in flight at once, one
// per handler, and measures the heap then.
func (e *env) memoryInFlight(ctx context.Context, round int) (Round, error) {
	n := e.opts.InFlight
	cfg := e.workerConfig(n, n)
	allIn := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	var in atomic.Int64
	h := worker.HandlerFunc(func(ctx context.Context, _ *worker.Delivery) error {
		if in.Add(1) == int64(n) {
			close(allIn)
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	wr, err := e.prepareWorker(ctx, "memory-inflight", round, cfg, h, n, InFlightBodySize)
	defer func() {
		free() // before the worker stops, so that its drain does not wait
		wr.cleanup()
	}()
	if err != nil {
		return Round{}, err
	}
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	wr.start(ctx)
	err = waitFor(ctx, allIn, wr.runErr, roundTimeout(n), func() string {
		return fmt.Sprintf("%d of %d in flight", in.Load(), n)
	})
	if err != nil {
		free()
		_, _ = wr.stop()
		return Round{}, err
	}
	heldFor := time.Since(wr.started)
	runtime.GC()
	runtime.ReadMemStats(&during)
	goroutines := runtime.NumGoroutine()
	free()
	stopTook, stopErr := wr.stop()
	payload := float64(n * InFlightBodySize)
	r := Round{
		Value:     float64(during.HeapInuse) / payload,
		Expected:  n,
		Processed: int(in.Load()),
		Elapsed:   heldFor,
		Detail: fmt.Sprintf("%d x %d B in flight after %s: HeapInuse %s MiB, HeapAlloc %s MiB (%.2fx); before start HeapInuse %s MiB (growth %.2fx); %d goroutines; stop took %s",
			n, InFlightBodySize, heldFor.Round(time.Millisecond), mib(during.HeapInuse), mib(during.HeapAlloc),
			float64(during.HeapAlloc)/payload, mib(before.HeapInuse),
			(float64(during.HeapInuse)-float64(before.HeapInuse))/payload, goroutines, stopTook.Round(time.Millisecond)),
	}
	if stopErr != nil {
		return r, stopErr
	}
	if r.Processed != n {
		return r, fmt.Errorf("the handler ran %d time(s) for %d messages", r.Processed, n)
	}
	if err := wr.verify(n); err != nil {
		return r, err
	}
	return r, nil
}

// discardSpans is a span exporter that drops what it is given: the traced
// case measures making, recording and batching spans, not a collector.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

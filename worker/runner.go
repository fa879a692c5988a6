package worker

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// copyTimeout bounds publishing a retry copy or a dead letter.
const copyTimeout = 30 * time.Second

// runner runs one route: a consumer and Concurrency handler goroutines
// reading from it. Handlers finish before the consumer closes, so every
// result is settled on the channel that delivered it.
type runner struct {
	w     *Worker
	route Route
	h     Handler
	log   *zap.Logger
	pub   *broker.Publisher
	conn  *broker.Conn
	store dedupe.Store // nil when dedupe is off for the route
	host  string

	cons     *broker.Consumer
	wg       sync.WaitGroup
	fin      *finisher // nil unless dedupe is on
	finWG    sync.WaitGroup
	inFlight prometheus.Gauge
	metrics  *queueMetrics
	stopping chan struct{} // closed when the drain begins
	stopOnce sync.Once
}

func newRunner(w *Worker, rt *runtime, r Route, h Handler) *runner {
	host, _ := os.Hostname()
	run := &runner{
		w: w, route: r, h: h,
		log:  w.log.Named("worker").With(zap.String("queue", r.Queue)),
		pub:  rt.pub,
		conn: rt.consume,
		host: host,
	}
	if r.Dedupe == DedupeOn {
		run.store = rt.store
	}
	run.inFlight = w.metrics.inFlight.WithLabelValues(r.Queue)
	run.metrics = w.metrics.forQueue(r.Queue)
	run.stopping = make(chan struct{})
	if run.store != nil {
		run.fin = newFinisher(run, doneMarkerOf(run.store))
	}
	return run
}

func (r *runner) start(hctx context.Context) error {
	// Acks wait to share a frame only while the broker still has window
	// to send ahead beyond the messages being worked on.
	ackBatch := max(1, (r.route.Prefetch-r.route.Concurrency)/2)
	cons, err := r.conn.Consume(broker.ConsumerConfig{Queue: r.route.Queue, Prefetch: r.route.Prefetch, AckBatch: ackBatch})
	if err != nil {
		return fmt.Errorf("route %q: %w", r.route.Queue, err)
	}
	r.cons = cons
	if r.fin != nil {
		r.finWG.Add(1)
		go func() { defer r.finWG.Done(); r.fin.run(hctx) }()
	}
	bs, batching := r.store.(dedupe.BatchStore)
	var jobs chan *job
	if batching {
		jobs = make(chan *job, claimBatchSize(r.route.Concurrency))
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.claimLoop(hctx, bs, jobs) }()
	}
	for i := 0; i < r.route.Concurrency; i++ {
		r.wg.Add(1)
		if batching {
			go r.loop(hctx, jobs)
		} else {
			go r.loopDirect(hctx)
		}
	}
	return nil
}

// loop runs the jobs the claimer hands out. Once the drain has begun, the
// jobs still waiting in the hand-out buffer go back to the queue.
func (r *runner) loop(hctx context.Context, jobs <-chan *job) {
	defer r.wg.Done()
	for j := range jobs {
		if r.draining() {
			rctx, cancel := releaseContext(hctx)
			r.giveBack(rctx, []*job{j})
			cancel()
			continue
		}
		r.run(hctx, j)
	}
}

// draining reports whether the drain has begun.
func (r *runner) draining() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// loopDirect runs deliveries as the consumer hands them out.
func (r *runner) loopDirect(hctx context.Context) {
	defer r.wg.Done()
	for bd := range r.cons.Deliveries() {
		r.run(hctx, r.prepare(bd))
	}
}

func (r *runner) run(hctx context.Context, j *job) {
	if j.bd.Stale() {
		// Its channel closed while it waited to be handed out: the
		// broker has requeued it, so running it now would only run it
		// twice.
		rctx, cancel := releaseContext(hctx)
		r.releaseIfClaimed(rctx, j)
		cancel()
		r.inFlight.Dec()
		return
	}
	r.process(hctx, j)
}

// stop begins the drain: no new message starts.
func (r *runner) stop() {
	r.stopOnce.Do(func() { close(r.stopping) })
	r.cons.Stop()
}

// wait returns when every handler goroutine has ended (after Stop) and
// the finisher has settled what they handed it.
func (r *runner) wait() {
	r.wg.Wait()
	if r.fin != nil {
		r.fin.stop()
	}
}

// close stops the consumer, waits for the handlers and flushes the acks.
func (r *runner) close() {
	if r.cons == nil {
		return
	}
	r.stop()
	r.wait()
	r.finWG.Wait()
	_ = r.cons.Close()
}

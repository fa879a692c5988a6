package worker

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/flow"
)

// source is a route's consumer, the seam to the broker's deliveries.
type source interface {
	// Deliveries is closed after Stop, once no more deliveries will come.
	Deliveries() <-chan *broker.Delivery
	// Stop cancels the subscription; deliveries not handed out go back.
	Stop()
	// Close flushes the acks and closes the channels.
	Close() error
}

// pipeline runs one route's stages in the order a message walks them:
// intake (consume, claim), execute (handler, verdict), settle (copy,
// release, ack) or finish (done mark, ack). It owns Concurrency handler
// goroutines, intake's goroutine when it claims, and the finisher's; the
// stages get what they need from it as fields and callbacks, none reaches
// back into it.
type pipeline struct {
	src         source
	concurrency int
	log         *zap.Logger
	metrics     *queueMetrics
	tracer      *processTracer // nil when tracing is off

	intake  *intake
	exec    *executor
	settler *settler
	fin     *finisher // nil unless dedupe is on
	gate    *gate     // the outage breaker (pause.go)
	limits  *limits   // per-key limits (limit.go); nil without
	ordered bool      // retries in place (order.go)
	parked  *parking  // jobs waiting for another owner's claim (holder.go)

	wg         sync.WaitGroup // handlers and intake
	finWG      sync.WaitGroup
	keeperWG   sync.WaitGroup
	stopKeeper context.CancelFunc // nil without dedupe
	stopping   chan struct{}      // closed when the drain begins
	stopOnce   sync.Once
}

// pipelineConfig is what a route's pipeline is built from.
type pipelineConfig struct {
	route   Route
	handler Handler // the route's handler, middleware applied
	src     source
	copies  copyStore
	claims  *claims // nil when dedupe is off
	ttl     time.Duration
	prefix  string // of dedupe keys
	host    string
	user    string // the broker user copies are published as

	failOpen bool
	health   storeHealth
	log      *zap.Logger
	metrics  *queueMetrics
	tracer   *processTracer // nil when tracing is off
	pause    *flowMetrics   // nil: not exported
	limiter  *flow.Limiter  // nil unless the route has limits
}

func newPipeline(c pipelineConfig) *pipeline {
	r := c.route
	p := &pipeline{src: c.src, concurrency: r.Concurrency, log: c.log, metrics: c.metrics, tracer: c.tracer, stopping: make(chan struct{})}
	p.intake = &intake{
		deliveries: c.src.Deliveries(),
		view:       newViewer(r.Queue, r.Retry.MaxAttempts, c.prefix, r.DedupeKey).into,
		claims:     c.claims, batch: claimBatchSize(r.Concurrency, r.Prefetch),
		stopping: p.stopping, inFlight: c.metrics.inFlight, giveBack: p.giveBack,
	}
	p.exec = &executor{handler: c.handler, timeout: r.Timeout, policy: r.Retry, log: c.log,
		claims: c.claims, ttl: c.ttl, failOpen: c.failOpen, health: c.health}
	p.settler = &settler{queue: r.Queue, copier: copier{queue: r.Queue, handler: r.Name, host: c.host, user: c.user},
		copies: c.copies, claims: c.claims, log: c.log}
	p.gate = newGate(r, c.src, c.log, c.pause)
	p.limits = newLimits(r, c.limiter, c.log, c.pause)
	p.ordered = r.Order.Partitions > 0 && !r.Order.Overtake
	p.parked = newParking(r.Prefetch)
	if c.claims != nil {
		p.fin = newFinisher(&finisher{store: c.claims.store, claims: c.claims, ttl: c.ttl, log: c.log, health: c.health, complete: p.complete}, r.Prefetch)
	}
	return p
}

// start starts the goroutines; hctx is the handlers' context.
func (p *pipeline) start(hctx context.Context) {
	p.exec.deadlines = newDeadlines(hctx)
	p.gate.start(hctx)
	if p.fin != nil {
		p.finWG.Add(1)
		go func() { defer p.finWG.Done(); p.fin.run(hctx) }()
	}
	if k := p.intake.claims.keeperOf(); k != nil {
		// The claims are renewed until every job is settled, also after
		// the drain ran out of time and cancelled hctx.
		kctx, cancel := context.WithCancel(context.WithoutCancel(hctx))
		p.stopKeeper = cancel
		p.keeperWG.Add(1)
		go func() { defer p.keeperWG.Done(); k.run(kctx) }()
	}
	if p.intake.claims == nil {
		// Nothing to claim: handlers take deliveries as the consumer
		// hands them out.
		for range p.concurrency {
			p.wg.Add(1)
			go p.direct(hctx)
		}
		return
	}
	jobs := make(chan *job, p.intake.batch)
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.intake.run(hctx, jobs) }()
	for range p.concurrency {
		p.wg.Add(1)
		go p.claimed(hctx, jobs)
	}
}

// direct runs deliveries as the consumer hands them out. Once the drain
// has begun, no new message starts: the deliveries still coming go back
// to the queue (so an ordered partition's next message cannot overtake
// the one a retry in place has just put back at the head).
func (p *pipeline) direct(hctx context.Context) {
	defer p.wg.Done()
	for bd := range p.intake.deliveries {
		j := p.intake.prepare(bd)
		if p.intake.draining() {
			rctx, cancel := releaseContext(hctx)
			p.giveBack(rctx, []*job{j})
			cancel()
			continue
		}
		p.run(hctx, j)
	}
}

// claimed runs the jobs intake hands out, and the parked ones once they
// are decided. Once the drain has begun, the jobs still waiting in the
// hand-out buffer go back to the queue.
func (p *pipeline) claimed(hctx context.Context, jobs <-chan *job) {
	defer p.wg.Done()
	for {
		var j *job
		select {
		case j = <-p.parked.ready:
		case next, ok := <-jobs:
			if !ok {
				return
			}
			j = next
		}
		switch {
		case p.intake.draining():
			rctx, cancel := releaseContext(hctx)
			p.giveBack(rctx, []*job{j})
			cancel()
		case !p.park(hctx, j):
			p.run(hctx, j)
		}
	}
}

// run walks one job through execute, then settle or finish.
func (p *pipeline) run(hctx context.Context, j *job) {
	if j.bd.Stale() {
		// Its channel closed while it waited to be handed out: the
		// broker has requeued it, so running it now would only run it
		// twice.
		rctx, cancel := releaseContext(hctx)
		p.intake.claims.releaseUnstarted(rctx, j)
		cancel()
		p.metrics.inFlight.Dec()
		return
	}
	trial, ok := p.gate.admit(hctx)
	if !ok {
		// The route is paused: the job goes back unstarted.
		rctx, cancel := releaseContext(hctx)
		p.giveBack(rctx, []*job{j})
		cancel()
		return
	}
	p.metrics.waited(j)
	ctx := p.tracer.start(hctx, j)
	release, lres, ok := p.limits.take(ctx, j)
	if !ok {
		// Over its key's limit: round a tier, no attempt spent.
		p.gate.report(trial, lres)
		rctx, cancel := releaseContext(hctx)
		p.intake.claims.releaseUnstarted(rctx, j)
		cancel()
		p.complete(ctx, j, lres)
		return
	}
	res := p.exec.execute(ctx, j)
	if p.ordered {
		res, trial = p.inPlace(ctx, j, res, trial)
	}
	release()
	res = p.gate.outcome(trial, res)
	if j.markDone {
		// Success under a claim: the finisher stores the done mark,
		// batched with others, and only then acks.
		p.fin.add(j, res)
		return
	}
	p.complete(ctx, j, res)
}

// complete settles a job and records its outcome.
func (p *pipeline) complete(hctx context.Context, j *job, res result) {
	final := p.settler.settle(hctx, j, res)
	p.tracer.end(j, final)
	took := time.Since(j.start)
	p.metrics.inFlight.Dec()
	p.metrics.observe(final, took)
	logEvent(p.log, j, final, took)
}

// giveBack requeues jobs that no handler started and releases their
// claims under ctx (see releaseContext).
func (p *pipeline) giveBack(ctx context.Context, jobs []*job) {
	for _, j := range jobs {
		p.intake.claims.releaseUnstarted(ctx, j)
		_ = j.bd.Nack(true)
		p.metrics.inFlight.Dec()
	}
}

// stop begins the drain: no new message starts.
func (p *pipeline) stop() {
	p.stopOnce.Do(func() { close(p.stopping) })
	p.src.Stop()
}

// wait returns when every handler goroutine has ended (after stop) and
// the finisher has settled what they handed it.
func (p *pipeline) wait() {
	p.wg.Wait()
	if p.exec.deadlines != nil {
		p.exec.deadlines.close()
	}
	if p.fin != nil {
		p.fin.stop()
	}
}

// close stops the consumer, waits for the handlers and the finisher,
// stops renewing claims and flushes the acks.
func (p *pipeline) close() {
	p.stop()
	p.wait()
	p.finWG.Wait()
	p.gate.stop()
	if p.stopKeeper != nil {
		p.stopKeeper()
		p.keeperWG.Wait()
	}
	_ = p.src.Close()
}

package worker

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/flow"
)

// pausable is a source that can cancel its subscription and subscribe
// again (the broker's consumer).
type pausable interface {
	Pause()
	Resume(prefetch int)
}

// gate is a route's outage breaker in front of its handlers. While it is
// open the route's subscription is cancelled and a job that reaches a
// handler goes back to the queue unstarted; half-open, the route
// subscribes with a prefetch of one and lets one trial job through; closed,
// it subscribes with its prefetch again. It owns the breaker's goroutine.
type gate struct {
	b         *flow.Breaker
	log       *zap.Logger
	firstTier time.Duration // where an excused failure goes (see outcome)
	inPlace   bool          // an ordered route's: it goes back to the head instead

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// flowMetrics are the pause and limit collectors, shared by every route.
type flowMetrics struct {
	paused  *prometheus.GaugeVec
	pauses  *prometheus.CounterVec
	limited *prometheus.CounterVec
}

func newFlowMetrics() *flowMetrics {
	return &flowMetrics{
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_route_paused",
			Help: "1 while the route is paused because a dependency is down (its subscription cancelled), by queue.",
		}, []string{"queue"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_route_pauses_total",
			Help: "Times the route paused because a dependency was down, by queue.",
		}, []string{"queue"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_limited_total",
			Help: "Messages over their key's limit (concurrency or rate), sent round a delay tier without spending an attempt, by queue and limit.",
		}, []string{"queue", "limit"}),
	}
}

func (m *flowMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.paused, m.pauses, m.limited} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// newGate builds route r's gate; src is paused and resumed when it can be.
func newGate(r Route, src source, log *zap.Logger, m *flowMetrics) *gate {
	g := &gate{log: log, firstTier: r.Retry.Delays[0], inPlace: r.Order.Partitions > 0 && !r.Order.Overtake}
	ps, _ := src.(pausable)
	var paused prometheus.Gauge
	var pauses prometheus.Counter
	if m != nil {
		paused, pauses = m.paused.WithLabelValues(r.Queue), m.pauses.WithLabelValues(r.Queue)
		paused.Set(0)
	}
	b, err := flow.NewBreaker(flow.BreakerConfig{
		Threshold:  max(0, r.Pause.After),
		MinBackoff: r.Pause.MinBackoff,
		MaxBackoff: r.Pause.MaxBackoff,
		Probe:      r.Pause.Probe,
		OnChange: func(c flow.Change) {
			g.changed(c, ps)
			if paused == nil {
				return
			}
			switch {
			case c.To == flow.Closed:
				paused.Set(0)
			case c.From == flow.Closed:
				paused.Set(1)
				pauses.Inc()
			}
		},
	})
	if err != nil {
		// Route.validate has checked every value the breaker takes.
		panic("worker: pause settings passed validation but not the breaker's: " + err.Error())
	}
	g.b = b
	return g
}

// changed carries a transition out on the subscription and logs it.
func (g *gate) changed(c flow.Change, ps pausable) {
	switch c.To {
	case flow.Open:
		if ps != nil {
			ps.Pause()
		}
		if c.From == flow.Open {
			g.log.Info("route still paused: the probe failed", zap.Error(c.Cause), zap.Duration("next_probe_in", c.Wait))
			return
		}
		g.log.Warn("route paused: a dependency is down; consuming stops until a probe succeeds",
			zap.Error(c.Cause), zap.Duration("next_probe_in", c.Wait))
	case flow.HalfOpen:
		if ps != nil {
			ps.Resume(1)
		}
		g.log.Info("route probing: consuming one trial message")
	case flow.Closed:
		if ps != nil {
			ps.Resume(0)
		}
		g.log.Info("route resumed")
	}
}

// start runs the breaker's waits and probes until stop.
func (g *gate) start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(context.WithoutCancel(ctx))
	g.wg.Add(1)
	go func() { defer g.wg.Done(); g.b.Run(ctx) }()
}

func (g *gate) stop() {
	if g.cancel != nil {
		g.cancel()
		g.wg.Wait()
	}
}

// admit says whether a job may run now, and whether it is the trial.
func (g *gate) admit(ctx context.Context) (trial, ok bool) { return g.b.Admit(ctx) }

// report tells the breaker what a job's result says about the
// dependency.
func (g *gate) report(trial bool, res result) {
	g.b.Report(trial, breakerResult(res), res.err)
}

// outcome reports a handler's result to the breaker and returns what to
// carry out. A failure that ends while the route is paused (a trial's, or
// a handler's that started before the pause) spends no attempt: the route
// paused because its dependency is down, and the failure is taken for
// that. It goes round the first tier (an ordered route's back to the head
// of its partition), as Unavailable does, never to the dead letters; the
// failures that pause the route spend theirs.
func (g *gate) outcome(trial bool, res result) result {
	paused := g.b.State() != flow.Closed
	g.report(trial, res)
	if !paused || breakerResult(res) != flow.Failure {
		return res
	}
	if g.inPlace {
		return requeue(res.Kind, res.err)
	}
	return unspent(g.firstTier, res.Kind, res.err)
}

// failedInPlace reports a failure that an ordered route retries in place
// and says whether the route is paused now: the message then goes back
// to the head of its partition instead of waiting its tier.
func (g *gate) failedInPlace(trial bool, res result) bool {
	g.report(trial, res)
	return g.b.State() != flow.Closed
}

// breakerResult is what a result says about the handler's dependency:
// Unavailable says it is down; a success that it answers; a handler's
// error, panic or timeout is a failure toward Pause.After; anything else
// (a bad message, a duplicate, a claim held elsewhere) says nothing.
func breakerResult(res result) flow.Result {
	switch {
	case res.Kind == KindUnavailable:
		return flow.Down
	case res.Outcome == OutcomeAck:
		return flow.Success
	case res.spend && (res.Kind == KindError || res.Kind == KindPanic || res.Kind == KindTimeout):
		return flow.Failure
	}
	return flow.Neutral
}

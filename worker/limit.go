package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/flow"
	"github.com/warrenmq/warren/retry"
)

// Limits bound a route's handlers per key, across every worker that
// shares the Redis: at most Concurrency handlers at once and at most Rate
// starts per Period for one key, while other keys run freely. A message
// over its key's limit is not run: it goes round a delay tier without
// spending an attempt (the first tier for concurrency; for the rate, the
// smallest tier at least as long as the wait until the window has room)
// and is counted in warren_limited_total. Concurrency slots are Redis
// leases renewed while the handler runs, so a killed worker's slots are
// free again within a lease (5s).
type Limits struct {
	// Key is the key of a message: a header, a body field, the routing
	// key. Required when a limit is set. Long or binary keys are hashed.
	// A message it panics on is dead-lettered, kind panic, unrun.
	Key func(*Delivery) string
	// Concurrency is how many handlers may run at once for one key. 0
	// means no bound.
	Concurrency int
	// Rate is how many handlers may start per Period for one key (a
	// sliding window). 0 means no bound.
	Rate int
	// Period is the window of Rate. Required with Rate.
	Period time.Duration
}

func (l Limits) zero() bool { return l.limit().Zero() }

func (l Limits) limit() flow.Limit {
	return flow.Limit{Concurrency: l.Concurrency, Rate: l.Rate, Period: l.Period}
}

func (l Limits) validate() error {
	if err := l.limit().Validate(); err != nil {
		return err
	}
	if !l.zero() && l.Key == nil {
		return errors.New("limits: a key function (Limits.Key) is required with a limit")
	}
	return nil
}

// limits is a route's per-key limits in front of its handlers.
type limits struct {
	l       *flow.Limiter
	queue   string
	limit   flow.Limit
	key     func(*Delivery) string
	policy  retry.Policy
	log     *zap.Logger
	limited map[string]prometheus.Counter
}

// newLimits is route r's limits, nil when it has none.
func newLimits(r Route, l *flow.Limiter, log *zap.Logger, m *flowMetrics) *limits {
	if l == nil || r.Limits.zero() {
		return nil
	}
	g := &limits{l: l, queue: r.Queue, limit: r.Limits.limit(), key: r.Limits.Key, policy: r.Retry, log: log,
		limited: map[string]prometheus.Counter{}}
	if m == nil {
		m = newFlowMetrics() // not registered: counted, not exported
	}
	for _, over := range []string{flow.OverConcurrency, flow.OverRate} {
		g.limited[over] = m.limited.WithLabelValues(r.Queue, over)
	}
	return g
}

// take takes a slot for j's key. ok: run the handler, then call release.
// Otherwise res sends the message round a tier without spending an
// attempt: its key is over a limit, or Redis did not answer (fail
// closed).
func (g *limits) take(hctx context.Context, j *job) (release func(), res result, ok bool) {
	if g == nil || j.decidedByClaim() {
		// A message intake found done or held elsewhere does not run
		// its handler here: it must not use up its key's limit.
		return func() {}, result{}, true
	}
	key, kerr := callback("Limits.Key", func() string { return g.key(j.d) })
	if kerr != nil {
		g.log.Error("route callback panicked", append(messageFields(j.d), zap.Error(kerr))...)
		return nil, deadLetter(KindPanic, kerr), false
	}
	slot, err := g.l.Acquire(hctx, g.queue, key, g.limit)
	if err != nil {
		g.log.Warn("limiter unreachable; the message goes round the first tier without spending an attempt", zap.Error(err))
		return nil, unspent(g.policy.Delays[0], KindStoreDown, err), false
	}
	if !slot.Held() {
		g.limited[slot.Over].Inc()
		delay := g.policy.Delays[0]
		if slot.Over == flow.OverRate {
			delay = g.policy.TierFor(slot.RetryIn)
		}
		return nil, unspent(delay, KindLimited, fmt.Errorf("the message's key is over its %s limit", slot.Over)), false
	}
	stop := slot.Keep(func(err error) {
		g.log.Warn("a limit slot's lease could not be extended; its key may run one more handler meanwhile", zap.Error(err))
	})
	return func() {
		stop()
		rctx, cancel := releaseContext(hctx)
		defer cancel()
		if err := slot.Release(rctx); err != nil {
			g.log.Warn("releasing a limit slot failed; it is free when its lease ends", zap.Error(err))
		}
	}, result{}, true
}

// openLimiter connects the limiter when a route has limits; it uses the
// dedupe store's Redis client when there is one.
func (w *Worker) openLimiter(rt *runtime, routes []Route) error {
	need := false
	for _, r := range routes {
		need = need || !r.Limits.zero()
	}
	if !need {
		return nil
	}
	if rt.redis == nil {
		opts, err := dedupe.ParseRedisURL(w.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("%s_REDIS_URL: %w", EnvPrefix, err)
		}
		if err := w.applyRedisTLS(opts); err != nil {
			return err
		}
		rt.redis = redis.NewUniversalClient(opts)
	}
	l, err := flow.NewLimiter(rt.redis, flow.LimiterConfig{Prefix: w.cfg.DedupePrefix})
	if err != nil {
		return err
	}
	rt.limiter = l
	return nil
}

package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/flow"
)

// runtime is what Run connects: a connection for consuming, one for
// publishing (so that flow control on publishes never holds up acks), the
// publisher, and the dedupe store.
type runtime struct {
	consume *broker.Conn
	publish *broker.Conn
	pub     *broker.Publisher
	store   dedupe.BatchStore
	tx      dedupe.TxStore // the store's transactional done mark; nil if none
	redis   redis.UniversalClient
	limiter *flow.Limiter // nil unless a route has limits
}

func (w *Worker) connect(ctx context.Context, routes []Route) (*runtime, error) {
	rt := &runtime{}
	if err := w.connectInto(ctx, rt, routes); err != nil {
		rt.close()
		return nil, err
	}
	return rt, nil
}

func (w *Worker) connectInto(ctx context.Context, rt *runtime, routes []Route) error {
	bc := broker.Config{URL: w.cfg.AMQPURL, Logger: w.log, TLS: w.amqpTLS, TracerProvider: w.cfg.TracerProvider}
	// The publisher's connection is dialed while the consumer's connects
	// and declares: a start (or a restart after a crash) waits for the
	// slower of the two, not for both in turn. The first failure stops
	// the other.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var first struct {
		sync.Once
		err error
	}
	fail := func(err error) {
		first.Do(func() { first.err = err })
		cancel()
	}
	pc := bc
	pc.Name = "warren-publish"
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		c, err := broker.Dial(dctx, pc)
		if err != nil {
			fail(err)
		}
		rt.publish = c
	}()
	bc.Name = "warren-consume"
	if err := w.dialAndDeclare(dctx, rt, bc, routes); err != nil {
		fail(err)
	}
	<-pubDone
	if first.err != nil {
		return first.err
	}
	rt.pub = rt.publish.NewPublisher()
	if err := w.openStore(rt, routes); err != nil {
		return err
	}
	return w.openLimiter(rt, routes)
}

// dialAndDeclare dials the consumer's connection and declares every
// route's topology on it.
func (w *Worker) dialAndDeclare(ctx context.Context, rt *runtime, bc broker.Config, routes []Route) error {
	c, err := broker.Dial(ctx, bc)
	if err != nil {
		return err
	}
	rt.consume = c
	for _, r := range routes {
		if err := rt.consume.Declare(ctx, r.topology(w.cfg.DeliveryLimit)); err != nil {
			return fmt.Errorf("route %q: %w", r.Queue, err)
		}
		w.log.Info("declared", zap.String("queue", r.Queue), zap.String("queue_type", string(r.QueueType)),
			zap.Durations("retry_delays", r.Retry.Delays))
	}
	return nil
}

func (w *Worker) openStore(rt *runtime, routes []Route) error {
	need := false
	for _, r := range routes {
		need = need || r.Dedupe == DedupeOn
	}
	if !need {
		return nil
	}
	if !w.cfg.DedupeFailOpen {
		w.health.setStoreUsed() // fail closed: readiness follows the store
	}
	if w.cfg.Store != nil {
		rt.store, rt.tx = batchStore(w.cfg.Store), txStoreOf(w.cfg.Store)
		return nil
	}
	opts, err := dedupe.ParseRedisURL(w.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("%s_REDIS_URL: %w", EnvPrefix, err)
	}
	if err := w.applyRedisTLS(opts); err != nil {
		return err
	}
	rt.redis = redis.NewUniversalClient(opts)
	store, err := dedupe.NewRedis(rt.redis, dedupe.RedisConfig{})
	if err != nil {
		return err
	}
	rt.store, rt.tx = store, store
	return nil
}

// applyRedisTLS adds the configured CA and client certificate to a
// rediss:// connection.
func (w *Worker) applyRedisTLS(opts *redis.UniversalOptions) error {
	if w.redisTLS == nil {
		return nil
	}
	tlsCfg := w.redisTLS.Clone()
	if opts.TLSConfig == nil {
		return fmt.Errorf("%s_REDIS_CA_FILE/CERT_FILE/KEY_FILE: set, but %s_REDIS_URL is not rediss://", EnvPrefix, EnvPrefix)
	}
	tlsCfg.ServerName = opts.TLSConfig.ServerName
	opts.TLSConfig = tlsCfg
	return nil
}

// pingStore checks the dedupe store every storePingInterval, so that
// readiness follows the store even when no message flows. It returns a
// function that stops it and waits.
func (w *Worker) pingStore(store dedupe.Store) (stop func()) {
	check := func(ctx context.Context) {
		err := store.Ping(ctx)
		if ctx.Err() == nil {
			w.health.storeResult(err != nil)
		}
	}
	check(context.Background())
	return every(storePingInterval, check)
}

// storePingInterval is how often readiness checks the dedupe store.
const storePingInterval = 2 * time.Second

func (rt *runtime) close() {
	if rt.pub != nil {
		_ = rt.pub.Close()
	}
	if rt.publish != nil {
		_ = rt.publish.Close()
	}
	if rt.consume != nil {
		_ = rt.consume.Close()
	}
	if rt.redis != nil {
		_ = rt.redis.Close()
	}
}

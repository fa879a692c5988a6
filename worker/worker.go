package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// ErrNotRunning is returned by Publish when Run has not connected yet or
// has returned.
var ErrNotRunning = errors.New("worker: not running")

// Worker runs the handlers of its routes. Configure it with New and
// Handle, then call Run.
type Worker struct {
	cfg Config
	log *zap.Logger
	own bool // the logger was built here and is synced at the end

	mu      sync.Mutex
	mws     []Middleware
	routes  []Route
	running bool

	pub     atomic.Pointer[broker.Publisher]
	started chan struct{}
	health  health
	metrics *metrics
	flows   *flowMetrics
	reg     *prometheus.Registry
	host    string // written on dead letters

	amqpTLS, redisTLS *tls.Config // loaded by New; nil without TLS files
}

// New validates cfg, fills its defaults and returns a worker.
func New(cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	amqpTLS, redisTLS, err := cfg.loadTLS()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	w := &Worker{cfg: cfg, log: cfg.Logger, started: make(chan struct{}), metrics: newMetrics(), reg: cfg.Registry,
		host: host, amqpTLS: amqpTLS, redisTLS: redisTLS}
	if w.reg == nil {
		w.reg = prometheus.NewRegistry()
	}
	if err := w.metrics.register(w.reg); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	w.flows = newFlowMetrics()
	if err := w.flows.register(w.reg); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	if w.log == nil {
		log, err := NewLogger(cfg.LogLevel, cfg.LogFormat)
		if err != nil {
			return nil, err
		}
		w.log, w.own = log, true
	}
	return w, nil
}

// Registry returns the registry of the worker's metrics, to add your own
// collectors or serve it yourself.
func (w *Worker) Registry() *prometheus.Registry { return w.reg }

// Config returns the effective configuration, defaults filled in.
func (w *Worker) Config() Config { return w.cfg }

// Logger returns the worker's logger.
func (w *Worker) Logger() *zap.Logger { return w.log }

// Use adds middleware for every route. Call it before Run.
func (w *Worker) Use(mws ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mws = append(w.mws, mws...)
}

// Handle adds a route. Call it before Run.
func (w *Worker) Handle(r Route) error {
	r, err := r.resolve(w.cfg)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return fmt.Errorf("route %q: add routes before Run", r.Queue)
	}
	parts := r.partitions()
	for _, o := range w.routes {
		for _, p := range parts {
			if o.Queue == p.Queue {
				return fmt.Errorf("route %q: the queue %q already has a route", r.Queue, p.Queue)
			}
		}
	}
	w.routes = append(w.routes, parts...)
	return nil
}

// Publish publishes through the worker's confirmed publisher; see
// broker.Publisher.Publish. It waits for Run to connect, until ctx ends.
func (w *Worker) Publish(ctx context.Context, exchange, key string, msg broker.Message) error {
	select {
	case <-w.started:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the worker to start: %w", ctx.Err())
	}
	p := w.pub.Load()
	if p == nil {
		return ErrNotRunning
	}
	return p.Publish(ctx, exchange, key, msg)
}

// Ready reports whether the worker is processing: connected to the
// broker, subscribed on every route, and, with fail-closed dedupe, the
// store answering.
func (w *Worker) Ready() bool { return w.health.ready() }

// Run connects, declares every route's topology, and processes messages
// until ctx ends. Then it drains: consumers are cancelled, prefetched
// messages that no handler started go back to their queues, handlers in
// flight get ShutdownTimeout to finish (then their contexts are
// cancelled), their results are acked, and every connection is closed.
// Run returns nil after a drain, or the error that stopped start-up.
func (w *Worker) Run(ctx context.Context) error {
	routes, mws, err := w.begin()
	if err != nil {
		return err
	}
	defer w.end()
	// The clients' own log lines go to this run's logger until it returns.
	defer broker.RouteClientLogs(w.log)()
	defer dedupe.RouteClientLogs(w.log)()
	w.log.Info("starting", append(w.cfg.logFields(), zap.Int("routes", len(routes)))...)
	w.warnConsumerTimeout(routes)
	srv, err := w.startServers(w.reg)
	if err != nil {
		return err
	}
	defer srv.stop()
	rt, err := w.connect(ctx, routes)
	if err != nil {
		return err
	}
	defer rt.close()
	for _, c := range runtimeCollectors(rt, w) {
		if err := w.reg.Register(c); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
		defer w.reg.Unregister(c)
	}
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	pipes, err := w.startPipelines(hctx, rt, routes, mws)
	if err != nil {
		return err
	}
	if rt.store != nil {
		stopPing := w.pingStore(rt.store)
		defer stopPing()
	}
	stopLag := w.startLag(rt.consume.NewInspector(), routes)
	defer stopLag()
	w.pub.Store(rt.pub)
	w.health.setRunning(true)
	close(w.started)
	w.log.Info("running")
	<-ctx.Done()
	w.health.setRunning(false)
	w.drain(pipes, cancelHandlers)
	return nil
}

// startPipelines consumes every route's queue and starts its pipeline;
// readiness follows both connections and every subscription.
func (w *Worker) startPipelines(hctx context.Context, rt *runtime, routes []Route, mws []Middleware) ([]*pipeline, error) {
	pipes := make([]*pipeline, 0, len(routes))
	checks := []func() bool{rt.consume.Connected, rt.publish.Connected}
	for _, r := range routes {
		// Acks wait to share a frame only while the broker still has
		// window to send ahead beyond the messages being worked on.
		ackBatch := max(1, (r.Prefetch-r.Concurrency)/2)
		cons, err := rt.consume.Consume(broker.ConsumerConfig{Queue: r.Queue, Prefetch: r.Prefetch, AckBatch: ackBatch})
		if err != nil {
			stopAll(pipes)
			return nil, fmt.Errorf("route %q: %w", r.Queue, err)
		}
		checks = append(checks, cons.Active)
		h := chain(r.Handler, append(append([]Middleware(nil), mws...), r.Middleware...)...)
		p := newPipeline(w.pipelineConfig(rt, r, cons, h))
		p.start(hctx)
		pipes = append(pipes, p)
	}
	w.health.setConns(checks...)
	return pipes, nil
}

// pipelineConfig is what route r's pipeline gets from the worker.
func (w *Worker) pipelineConfig(rt *runtime, r Route, src source, h Handler) pipelineConfig {
	log := w.log.Named("worker").With(zap.String("queue", r.Queue))
	c := pipelineConfig{
		route: r, handler: h, src: src,
		copies: brokerCopies{pub: rt.pub, conn: rt.consume},
		ttl:    w.cfg.DedupeTTL, prefix: w.cfg.DedupePrefix, host: w.host, user: rt.publish.User(),
		failOpen: w.cfg.DedupeFailOpen, health: &w.health,
		log: log, metrics: w.metrics.forQueue(r.Queue), pause: w.flows,
		tracer: newProcessTracer(w.cfg.TracerProvider, r.Queue),
	}
	if !r.Limits.zero() {
		c.limiter = rt.limiter
	}
	if r.Dedupe == DedupeOn {
		c.claims = &claims{store: rt.store, tx: rt.tx, lease: w.cfg.DedupeLease, log: log,
			keeper: newKeeper(rt.store, w.cfg.DedupeLease, log, &w.health)}
	}
	return c
}

// warnConsumerTimeout warns about routes whose handlers may hold a message
// unacked for close to the broker's consumer_timeout, after which the
// broker closes the channel and redelivers everything on it.
func (w *Worker) warnConsumerTimeout(routes []Route) {
	for _, r := range routes {
		if r.Timeout+copyTimeout >= w.cfg.ConsumerTimeout*9/10 {
			w.log.Warn("handler timeout is close to the broker's consumer_timeout; raise the broker's consumer_timeout or lower the handler timeout",
				zap.String("queue", r.Queue), zap.Duration("handler_timeout", r.Timeout), zap.Duration("consumer_timeout", w.cfg.ConsumerTimeout))
		}
	}
}

func (w *Worker) begin() ([]Route, []Middleware, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return nil, nil, errors.New("worker: Run called twice")
	}
	if len(w.routes) == 0 {
		return nil, nil, errors.New("worker: no routes; call Handle before Run")
	}
	w.running = true
	return append([]Route(nil), w.routes...), append([]Middleware(nil), w.mws...), nil
}

func (w *Worker) end() {
	w.pub.Store(nil)
	w.log.Info("stopped")
	if w.own {
		_ = w.log.Sync()
	}
}

// drain stops consuming, waits for handlers within the shutdown timeout,
// then cancels what is left and waits for it too.
func (w *Worker) drain(runners []*pipeline, cancelHandlers context.CancelFunc) {
	w.log.Info("draining", zap.Duration("timeout", w.cfg.ShutdownTimeout))
	var stopped sync.WaitGroup
	for _, r := range runners {
		stopped.Add(1)
		go func() { defer stopped.Done(); r.stop() }()
	}
	stopped.Wait()
	done := make(chan struct{})
	go func() {
		for _, r := range runners {
			r.wait()
		}
		close(done)
	}()
	t := time.NewTimer(w.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.log.Warn("shutdown timeout reached, cancelling handlers still running")
		cancelHandlers()
		<-done
	}
	stopAll(runners)
}

func stopAll(runners []*pipeline) {
	for _, r := range runners {
		r.close()
	}
}

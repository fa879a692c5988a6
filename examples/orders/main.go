// Command orders is a small order-processing service built on warren.
//
// It declares a topic exchange "orders" with two queues: orders.created
// takes "order.created" events with a typed JSON handler, and orders.audit
// takes every "order.#" event. On start it publishes a few demo orders
// that show each path a message can take: success, a transient failure
// that is retried on the broker, an invalid body that is dead-lettered at
// once, and a re-published order that dedupe recognises as a duplicate.
//
//	go run ./examples/orders            # runs until Ctrl-C
//	go run ./examples/orders -once      # exits when the demo orders are done
//
// Configuration comes from WARREN_* environment variables (see the
// worker package); the defaults reach RabbitMQ and Redis on localhost.
// OTEL_* variables turn on OpenTelemetry traces (see the tracing package).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/tracing"
	"github.com/warrenmq/warren/worker"
)

// Order is the body of an order event.
type Order struct {
	ID       string  `json:"id"`
	Customer string  `json:"customer"`
	Total    float64 `json:"total"`
}

func main() {
	once := flag.Bool("once", false, "exit when the demo orders have been processed")
	demo := flag.Bool("demo", true, "publish the demo orders at start")
	flag.Parse()
	if err := run(*once, *demo); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func run(once, demo bool) error {
	cfg, err := worker.FromEnv()
	if err != nil {
		return err
	}
	if os.Getenv("WARREN_RETRY_DELAYS") == "" {
		cfg.RetryDelays = []time.Duration{time.Second, 5 * time.Second}
	}
	// Traces when OTEL_* variables ask for them (e.g.
	// OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318); off otherwise.
	tp, shutdown, err := tracing.FromEnv(context.Background(), "orders")
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	cfg.TracerProvider = tp
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc := newService(w.Logger(), stop, once)
	if err := svc.routes(w); err != nil {
		return err
	}
	if demo {
		go svc.publishDemo(ctx, w)
	}
	return w.Run(ctx)
}

// service holds the handlers and counts what the demo expects.
type service struct {
	log     *zap.Logger
	mu      sync.Mutex
	flaky   map[string]int // failures so far per order, for the retry demo
	pending map[string]bool
	stop    func()
	once    bool
}

func newService(log *zap.Logger, stop func(), once bool) *service {
	return &service{log: log.Named("orders"), flaky: map[string]int{}, pending: map[string]bool{}, stop: stop, once: once}
}

func (s *service) routes(w *worker.Worker) error {
	err := w.Handle(worker.Route{
		Queue:       "orders.created",
		Exchange:    "orders",
		BindingKeys: []string{"order.created"},
		Concurrency: 4,
		Handler:     worker.JSON(s.created),
	})
	if err != nil {
		return err
	}
	return w.Handle(worker.Route{
		Queue:       "orders.audit",
		Exchange:    "orders",
		BindingKeys: []string{"order.#"},
		Handler:     worker.HandlerFunc(s.audit),
	})
}

// created books an order. Order "o-flaky" fails twice before it succeeds,
// to show broker-side retries.
func (s *service) created(ctx context.Context, d *worker.Delivery, o Order) error {
	if o.ID == "" {
		return worker.Permanent(errors.New("order has no id"))
	}
	s.mu.Lock()
	fails := s.flaky[d.MessageID]
	if o.ID == "o-flaky" && fails < 2 {
		s.flaky[d.MessageID]++
		s.mu.Unlock()
		return fmt.Errorf("payment service unavailable (try %d)", fails+1)
	}
	s.mu.Unlock()
	worker.Logger(ctx).Info("order booked", zap.String("order", o.ID), zap.String("customer", o.Customer),
		zap.Float64("total", o.Total), zap.String("idempotency_key", d.IdempotencyKey))
	s.done(d.MessageID)
	return nil
}

func (s *service) audit(ctx context.Context, d *worker.Delivery) error {
	worker.Logger(ctx).Info("audit", zap.Int("bytes", len(d.Body)))
	return nil
}

func (s *service) done(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, id)
	if s.once && len(s.pending) == 0 {
		s.log.Info("demo orders done")
		s.stop()
	}
}

func (s *service) publishDemo(ctx context.Context, w *worker.Worker) {
	// Message ids carry a per-run suffix, so that a second run of the demo
	// is not recognised as a duplicate of the first one.
	run := broker.NewMessageID()[:6]
	orders := []struct {
		id   string
		body string
	}{
		{"o-1-" + run, `{"id":"o-1","customer":"ada","total":12.5}`},
		{"o-2-" + run, `{"id":"o-2","customer":"grace","total":99}`},
		{"o-flaky-" + run, `{"id":"o-flaky","customer":"linus","total":7}`},
		{"o-bad-" + run, `{"id": 42, this is not json`},
		{"o-1-" + run, `{"id":"o-1","customer":"ada","total":12.5}`}, // published again: a duplicate
	}
	s.mu.Lock()
	for _, o := range orders {
		if o.id != "o-bad-"+run {
			s.pending[o.id] = true
		}
	}
	s.mu.Unlock()
	for _, o := range orders {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := w.Publish(pctx, "orders", "order.created", broker.Message{
			MessageID: o.id, ContentType: "application/json", Body: []byte(o.body),
		})
		cancel()
		if err != nil {
			s.log.Error("publishing a demo order failed", zap.String("order", o.id), zap.Error(err))
			return
		}
		s.log.Info("published demo order", zap.String("order", o.id))
	}
}

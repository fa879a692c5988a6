package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// producerHeaders are headers carrying the context of a new producer
// span, as a traced publisher writes them.
func producerHeaders(t testing.TB) (map[string]any, trace.SpanContext) {
	t.Helper()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("producer").Start(context.Background(), "publish q", trace.WithSpanKind(trace.SpanKindProducer))
	span.End()
	h := map[string]any{}
	broker.InjectTrace(ctx, h)
	return h, span.SpanContext()
}

// spanSeen records the span context each handler run found in its context.
type spanSeen struct {
	mu  sync.Mutex
	scs []trace.SpanContext
}

func (s *spanSeen) handler(err error) Handler {
	return HandlerFunc(func(ctx context.Context, _ *Delivery) error {
		s.mu.Lock()
		s.scs = append(s.scs, trace.SpanFromContext(ctx).SpanContext())
		s.mu.Unlock()
		return err
	})
}

// A handler run is a consumer span "process <queue>", a child of the
// producer span its message carries; the handler finds it in its
// context; the dedupe claim and done mark are events on it.
func TestPipelineConsumerSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	seen := &spanSeen{}
	r := newRig(t, rigOptions{handler: seen.handler(nil), dedupe: true, tp: tp})
	r.start()
	h, producer := producerHeaders(t)
	r.deliver("m1", h)
	r.acks.waitSettled(t, 1)
	r.close()

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	s := spans[0]
	if s.Name() != "process q" || s.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span %q kind %v, want %q, consumer", s.Name(), s.SpanKind(), "process q")
	}
	if s.Parent().SpanID() != producer.SpanID() || s.SpanContext().TraceID() != producer.TraceID() || !s.Parent().IsRemote() {
		t.Errorf("span's parent %v, want the remote producer span %v", s.Parent(), producer)
	}
	if len(seen.scs) != 1 || !seen.scs[0].Equal(s.SpanContext()) {
		t.Errorf("handler saw span %v, want %v", seen.scs, s.SpanContext())
	}
	want := map[string]string{"messaging.system": "rabbitmq", "messaging.operation.type": "process",
		"messaging.message.id": "m1", "messaging.destination.subscription.name": "q",
		"messaging.rabbitmq.destination.routing_key": "q", "warren.outcome": "ack"}
	got := map[string]string{}
	for _, kv := range s.Attributes() {
		got[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, got[k], v)
		}
	}
	var events []string
	for _, e := range s.Events() {
		events = append(events, e.Name)
	}
	if len(events) != 2 || events[0] != EventDedupeClaim || events[1] != EventDedupeDone {
		t.Errorf("events %v, want [%s %s]", events, EventDedupeClaim, EventDedupeDone)
	}
	if s.EndTime().Before(s.StartTime()) {
		t.Errorf("span ends %v before it starts %v", s.EndTime(), s.StartTime())
	}
}

// A failed run's span carries the error and the outcome.
func TestPipelineConsumerSpanFailure(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	r := newRig(t, rigOptions{handler: failing(errors.New("db down")), tp: tp})
	r.start()
	r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	s := spans[0]
	if s.Status().Code != codes.Error || s.Status().Description != "db down" {
		t.Errorf("status %v, want error \"db down\"", s.Status())
	}
	if s.Parent().IsValid() {
		t.Errorf("a message without trace context got parent %v, want a root span", s.Parent())
	}
	found := false
	for _, kv := range s.Attributes() {
		found = found || (kv.Key == "warren.outcome" && kv.Value.AsString() == "retry")
	}
	if !found {
		t.Errorf("no warren.outcome=retry among %v", s.Attributes())
	}
}

// With tracing off, nothing is extracted: the handler's context holds no
// span, even when the message carries a trace context.
func TestPipelineTracingOff(t *testing.T) {
	seen := &spanSeen{}
	r := newRig(t, rigOptions{handler: seen.handler(nil)})
	r.start()
	h, _ := producerHeaders(t)
	r.deliver("m1", h)
	r.acks.waitSettled(t, 1)
	r.close()
	if len(seen.scs) != 1 || seen.scs[0].IsValid() {
		t.Errorf("handler saw %v, want no span", seen.scs)
	}
}

// nopAcks settles nothing: the benchmark's deliveries need no record.
type nopAcks struct{}

func (nopAcks) Ack(uint64) error        { return nil }
func (nopAcks) AckNow(uint64) error     { return nil }
func (nopAcks) Nack(uint64, bool) error { return nil }
func (nopAcks) Closed() bool            { return false }

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkHandlerPath is one message's walk through a route's stages
// (job, handler, verdict, ack, metrics) with a no-op handler, without
// dedupe: tracing off, and on (every span sampled, batched to an
// exporter that drops them).
func BenchmarkHandlerPath(b *testing.B) {
	h, _ := producerHeaders(b)
	b.Run("off", func(b *testing.B) { benchPath(b, nil, h) })
	b.Run("on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		benchPath(b, tp, h)
	})
}

func benchPath(b *testing.B, tp trace.TracerProvider, headers map[string]any) {
	m := newMetrics()
	if err := m.register(prometheus.NewRegistry()); err != nil {
		b.Fatal(err)
	}
	route := Route{Queue: "q", Name: "q", Concurrency: 1, Prefetch: 2, Timeout: time.Minute,
		Retry: retry.Policy{}.WithDefaults()}
	noop := HandlerFunc(func(context.Context, *Delivery) error { return nil })
	p := newPipeline(pipelineConfig{route: route, handler: noop, src: newFakeSource(1), copies: &fakeCopies{},
		ttl: time.Hour, prefix: "test", host: "host", health: &health{}, log: zap.NewNop(),
		metrics: m.forQueue("q"), tracer: newProcessTracer(tp, "q")})
	// The handlers' context and the route's deadlines, as start sets them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.exec.deadlines = newDeadlines(ctx)
	defer p.exec.deadlines.close()
	body := []byte(`{"id":"o-1"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		bd := &broker.Delivery{Message: broker.Message{MessageID: "m", Body: body, Headers: headers, Timestamp: time.Now()},
			Queue: "q", RoutingKey: "q", Acknowledger: nopAcks{}, DeliveryTag: uint64(i + 1)}
		p.run(ctx, p.intake.prepare(bd))
	}
}

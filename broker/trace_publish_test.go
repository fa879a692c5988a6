package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// With a TracerProvider, Publish and PublishBatch make one producer span
// per message, a child of the caller's span, and the message arrives with
// that span's context in its headers; the caller's headers are not
// changed; an unroutable publish's span records the error. The inspector
// reads the queue's depth on its own channel, and survives asking for a
// missing queue.
func TestPublishSpans(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, broker.Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t), TracerProvider: tp})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	top, ex, q := simpleTopology(t, a, broker.Classic)
	if err := c.Declare(ctx, top); err != nil {
		t.Fatal(err)
	}
	pub := c.NewPublisher()
	defer pub.Close()
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	headers := map[string]any{"mine": "kept"}
	if err := pub.Publish(pctx, ex, "k", broker.Message{Body: []byte("one"), MessageID: "m-1", CorrelationID: "c-1", Headers: headers}); err != nil {
		t.Fatal(err)
	}
	errs := pub.PublishBatch(pctx, []broker.Outgoing{{Exchange: ex, RoutingKey: "k", Message: broker.Message{Body: []byte("two"), MessageID: "m-2"}}})
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	var ue *broker.UnroutableError
	if err := pub.Publish(pctx, ex, "nowhere", broker.Message{Body: []byte("lost")}); !errors.As(err, &ue) {
		t.Fatalf("publish to no queue: %v, want *UnroutableError", err)
	}
	parent.End()
	if len(headers) != 1 {
		t.Errorf("the caller's headers changed: %v", headers)
	}

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == broker.AttrMessageID {
				spans[kv.Value.AsString()] = s
			}
		}
		if s.Name() == "publish "+ex && s.Status().Code == codes.Error {
			spans["unroutable"] = s
		}
	}
	if n := a.WaitCount(q, 2, 10*time.Second); n != 2 {
		t.Fatalf("%d messages in %s, want 2", n, q)
	}
	for _, id := range []string{"m-1", "m-2"} {
		s, ok := spans[id]
		if !ok {
			t.Fatalf("no span for %s among %d", id, len(rec.Ended()))
		}
		if s.Name() != "publish "+ex || s.SpanKind() != trace.SpanKindProducer || s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: span %q kind %v parent %v; want %q, producer, child of the caller", id, s.Name(), s.SpanKind(), s.Parent(), "publish "+ex)
		}
		m, ok := a.Get(q)
		if !ok {
			t.Fatalf("%s not delivered", id)
		}
		if got := broker.SpanContextOf(m.Headers); got.SpanID() != s.SpanContext().SpanID() || got.TraceID() != s.SpanContext().TraceID() {
			t.Errorf("%s arrived with span context %v, want its publish span's %v", m.MessageId, got, s.SpanContext())
		}
		if m.Timestamp.IsZero() {
			t.Errorf("%s arrived without a timestamp", m.MessageId)
		}
	}
	if _, ok := spans["unroutable"]; !ok {
		t.Error("the unroutable publish's span has no error status")
	}

	insp := c.NewInspector()
	defer insp.Close()
	if _, err := insp.Inspect(ctx, q+".missing"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("inspect a missing queue: %v, want ErrNotFound", err)
	}
	info, err := insp.Inspect(ctx, q)
	if err != nil || info.Messages != 0 || info.Consumers != 0 {
		t.Errorf("inspect %s: %+v, %v; want 0 ready, 0 consumers", q, info, err)
	}
}

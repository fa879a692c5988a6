package broker_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
)

// The span context written into AMQP headers comes back out of them, as
// W3C traceparent and tracestate, in string or byte-slice values.
func TestTraceHeadersRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("t").Start(context.Background(), "publish x")
	defer span.End()
	ts, err := trace.ParseTraceState("vendor=v1")
	if err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext().WithTraceState(ts)
	ctx = trace.ContextWithSpanContext(ctx, sc)

	h := map[string]any{"traceparent": "stale", "other": "kept"}
	broker.InjectTrace(ctx, h)
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if h[broker.HeaderTraceParent] != want || h[broker.HeaderTraceState] != "vendor=v1" || h["other"] != "kept" {
		t.Fatalf("headers %v, want traceparent %s, tracestate vendor=v1, other kept", h, want)
	}
	got := broker.SpanContextOf(h)
	if !got.IsRemote() || got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || got.TraceState().Get("vendor") != "v1" {
		t.Errorf("extracted %v, want %v", got, sc)
	}
	// Headers read off the wire may hold bytes.
	b := map[string]any{broker.HeaderTraceParent: []byte(want)}
	if got := broker.SpanContextOf(b); got.SpanID() != sc.SpanID() {
		t.Errorf("from []byte: %v, want span %s", got, sc.SpanID())
	}
	// No context in ctx: the headers stay as they are; none in the
	// headers: nothing is extracted.
	h2 := map[string]any{"traceparent": "kept"}
	broker.InjectTrace(context.Background(), h2)
	if h2["traceparent"] != "kept" {
		t.Errorf("InjectTrace without a span changed the headers: %v", h2)
	}
	if broker.SpanContextOf(map[string]any{}).IsValid() || broker.SpanContextOf(map[string]any{"traceparent": "garbage"}).IsValid() {
		t.Error("a span context came out of headers without a valid traceparent")
	}
}

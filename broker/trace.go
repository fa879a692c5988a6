package broker

import (
	"context"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of warren's spans.
const TracerName = "github.com/warrenmq/warren"

// W3C trace-context headers, carried in AMQP message headers.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// Attribute keys of OpenTelemetry's messaging semantic conventions.
const (
	AttrSystem         = attribute.Key("messaging.system")
	AttrDestination    = attribute.Key("messaging.destination.name")
	AttrSubscription   = attribute.Key("messaging.destination.subscription.name")
	AttrOperationType  = attribute.Key("messaging.operation.type")
	AttrOperationName  = attribute.Key("messaging.operation.name")
	AttrMessageID      = attribute.Key("messaging.message.id")
	AttrConversationID = attribute.Key("messaging.message.conversation_id")
	AttrRoutingKey     = attribute.Key("messaging.rabbitmq.destination.routing_key")
	AttrBodySize       = attribute.Key("messaging.message.body.size")
	AttrDeliveryTag    = attribute.Key("messaging.rabbitmq.message.delivery_tag")
)

// propagator writes and reads W3C traceparent and tracestate, whatever the
// process's global propagator is.
var propagator propagation.TextMapPropagator = propagation.TraceContext{}

// headerCarrier lets the propagator read and write AMQP headers.
type headerCarrier map[string]any

func (h headerCarrier) Get(key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = value }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// InjectTrace writes the span context of ctx into headers as W3C
// traceparent (and tracestate when there is one), replacing what was
// there. Without a valid span context in ctx it changes nothing. headers
// must not be nil.
func InjectTrace(ctx context.Context, headers map[string]any) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	delete(headers, HeaderTraceState)
	propagator.Inject(ctx, headerCarrier(headers))
}

// ExtractTrace returns ctx with the remote span context that headers
// carry (W3C traceparent, tracestate); ctx as it is when they carry none.
func ExtractTrace(ctx context.Context, headers map[string]any) context.Context {
	if _, ok := headers[HeaderTraceParent]; !ok {
		return ctx
	}
	return propagator.Extract(ctx, headerCarrier(headers))
}

// SpanContextOf is the span context that headers carry, invalid when none.
func SpanContextOf(headers map[string]any) trace.SpanContext {
	return trace.SpanContextFromContext(ExtractTrace(context.Background(), headers))
}

// MessageAttributes are the semantic-convention attributes of m sent to
// (or received from) exchange with routing key key.
func MessageAttributes(exchange, key string, m *Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		AttrSystem.String("rabbitmq"),
		AttrDestination.String(exchange),
		AttrBodySize.Int(len(m.Body)),
	}
	if key != "" {
		attrs = append(attrs, AttrRoutingKey.String(key))
	}
	if m.MessageID != "" {
		attrs = append(attrs, AttrMessageID.String(m.MessageID))
	}
	if m.CorrelationID != "" {
		attrs = append(attrs, AttrConversationID.String(m.CorrelationID))
	}
	return attrs
}

// publishSpanName is "publish <destination>": the exchange, or for the
// default exchange the queue the routing key names.
func publishSpanName(exchange, key string) string {
	if exchange == "" {
		return "publish " + key
	}
	return "publish " + exchange
}

// startPublish starts the producer span of one publish and writes its
// context into a copy of m's headers. With tracing off it returns ctx and
// a nil span and leaves m alone.
func (p *Publisher) startPublish(ctx context.Context, exchange, key string, m *Message) (context.Context, trace.Span) {
	if p.tracer == nil {
		return ctx, nil
	}
	attrs := append(MessageAttributes(exchange, key, m),
		AttrOperationType.String("send"), AttrOperationName.String("publish"))
	ctx, span := p.tracer.Start(ctx, publishSpanName(exchange, key),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	h := make(map[string]any, len(m.Headers)+2)
	for k, v := range m.Headers {
		h[k] = v
	}
	InjectTrace(ctx, h)
	m.Headers = h
	return ctx, span
}

// EndSpan records err on span, if any, and ends it; a nil span is a no-op.
func EndSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

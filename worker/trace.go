package worker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
)

// Attributes warren adds to its consumer spans beside the messaging
// conventions'.
const (
	attrAttempt = attribute.Key("warren.attempt")
	attrOutcome = attribute.Key("warren.outcome")
	attrKind    = attribute.Key("warren.error.kind")
	attrReason  = attribute.Key("warren.dead_letter.reason")
	attrStatus  = attribute.Key("warren.dedupe.status")
)

// Span events of the dedupe claim and done mark.
const (
	EventDedupeClaim = "warren.dedupe.claim"
	EventDedupeDone  = "warren.dedupe.done"
)

// processTracer makes the consumer span of each handler run: "process
// <queue>", a child of the trace context the message carries (the
// producer span of its publish, or of the retry copy that brought it
// back). A nil *processTracer is tracing off: it costs one nil check.
type processTracer struct {
	tracer trace.Tracer
	queue  string
}

func newProcessTracer(tp trace.TracerProvider, queue string) *processTracer {
	if tp == nil {
		return nil
	}
	return &processTracer{tracer: tp.Tracer(broker.TracerName), queue: queue}
}

// start starts j's consumer span at the time j was delivered and returns
// hctx with it, so that the handler finds it with
// trace.SpanFromContext, and the retry copy or dead letter published
// for j becomes its child.
func (t *processTracer) start(hctx context.Context, j *job) context.Context {
	if t == nil {
		return hctx
	}
	bd := j.bd
	exchange := j.d.Exchange
	attrs := append(broker.MessageAttributes(exchange, j.d.RoutingKey, &bd.Message),
		broker.AttrSubscription.String(t.queue),
		broker.AttrOperationType.String("process"),
		broker.AttrOperationName.String("process"),
		broker.AttrDeliveryTag.Int64(int64(bd.DeliveryTag)),
		attrAttempt.Int(j.d.Attempt),
	)
	ctx, span := t.tracer.Start(broker.ExtractTrace(hctx, bd.Headers), "process "+t.queue,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(j.start), trace.WithAttributes(attrs...))
	if j.claimed {
		span.AddEvent(EventDedupeClaim, trace.WithTimestamp(j.claimedAt), trace.WithAttributes(claimAttrs(j)...))
	}
	j.span = span
	return ctx
}

func claimAttrs(j *job) []attribute.KeyValue {
	if j.cerr != nil {
		return []attribute.KeyValue{attrStatus.String("error"), attribute.String("error.message", j.cerr.Error())}
	}
	return []attribute.KeyValue{attrStatus.String(j.status.String())}
}

// end records the final result on j's span and ends it.
func (t *processTracer) end(j *job, res result) {
	span := j.span
	if t == nil || span == nil {
		return
	}
	j.span = nil
	if j.marked {
		attrs := []attribute.KeyValue{attrStatus.String("done")}
		if j.markErr != nil {
			attrs = []attribute.KeyValue{attrStatus.String("error"), attribute.String("error.message", j.markErr.Error())}
		}
		span.AddEvent(EventDedupeDone, trace.WithAttributes(attrs...))
	}
	span.SetAttributes(attrOutcome.String(string(res.Outcome)))
	if res.Kind != "" {
		span.SetAttributes(attrKind.String(res.Kind))
	}
	if res.Reason != "" {
		span.SetAttributes(attrReason.String(res.Reason))
	}
	if res.err != nil {
		span.RecordError(res.err)
		span.SetStatus(codes.Error, errText(res.err))
	}
	span.End(trace.WithTimestamp(time.Now()))
}

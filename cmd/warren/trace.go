package main

import (
	"context"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/tracing"
	"github.com/warrenmq/warren/worker"
)

// tracerKey carries the command's tracer provider in its context.
type tracerKey struct{}

// withTracing sets up tracing from the OTEL_* environment for a command
// and returns ctx carrying the provider (none when tracing is off) and a
// func that flushes and stops it, within a few seconds.
func withTracing(ctx context.Context) (context.Context, func(), error) {
	tp, shutdown, err := tracing.FromEnv(ctx, "warren")
	if err != nil {
		return ctx, func() {}, err
	}
	if tp == nil {
		return ctx, func() {}, nil
	}
	// Handlers in this process that use the global API find it too.
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			_, _ = os.Stderr.WriteString("warren: flushing traces: " + err.Error() + "\n")
		}
	}
	return context.WithValue(ctx, tracerKey{}, tp), stop, nil
}

// tracerOf is the command's tracer provider, nil when tracing is off.
func tracerOf(ctx context.Context) trace.TracerProvider {
	tp, _ := ctx.Value(tracerKey{}).(trace.TracerProvider)
	return tp
}

// handlerTrace is the W3C trace context a bridged handler continues: the
// handler run's span, or with tracing off the context its message
// carries. nil when there is none.
func handlerTrace(ctx context.Context, d *worker.Delivery) propagation.MapCarrier {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = broker.ExtractTrace(ctx, d.Headers)
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c
}

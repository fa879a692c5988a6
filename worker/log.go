package worker

import (
	"context"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type loggerKey struct{}

func withLogger(ctx context.Context, l *zap.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger of the message being handled, with the message
// fields set, or a no-op logger outside a handler.
func Logger(ctx context.Context) *zap.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*zap.Logger); ok {
		return l
	}
	return zap.NewNop()
}

func messageFields(d *Delivery) []zap.Field {
	return []zap.Field{
		zap.String("routing_key", d.RoutingKey),
		zap.String("message_id", d.MessageID),
		zap.String("correlation_id", d.CorrelationID),
		zap.Int("attempt", d.Attempt),
	}
}

// logEvent logs one message's outcome with the stable fields. Acks log at
// debug level so that a busy worker's log stays readable.
func (r *runner) logEvent(d *Delivery, dec decision, took time.Duration) {
	level := zapcore.InfoLevel
	switch dec.outcome {
	case OutcomeAck:
		level = zapcore.DebugLevel
	case OutcomeDeadLetter, OutcomeRequeue:
		level = zapcore.WarnLevel
	}
	ce := r.log.Check(level, "message "+string(dec.outcome))
	if ce == nil {
		return
	}
	fields := append(messageFields(d), zap.String("outcome", string(dec.outcome)), zap.Duration("duration", took))
	if dec.err != nil {
		fields = append(fields, zap.String("error", dec.err.Error()), zap.String("error_kind", dec.kind))
	}
	if dec.outcome == OutcomeRetry {
		fields = append(fields, zap.Duration("delay", dec.delay), zap.Bool("attempt_spent", dec.spend))
	}
	if dec.reason != "" {
		fields = append(fields, zap.String("reason", dec.reason))
	}
	if dec.stale {
		fields = append(fields, zap.Bool("result_dropped", true))
	}
	ce.Write(fields...)
}

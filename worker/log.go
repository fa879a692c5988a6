package worker

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type loggerKey struct{}

// msgLogger builds a message's logger on first use: most handlers never
// ask for it, and building one costs allocations on every message.
type msgLogger struct {
	base *zap.Logger
	d    *Delivery
	once sync.Once
	l    *zap.Logger
}

func (m *msgLogger) get() *zap.Logger {
	m.once.Do(func() { m.l = m.base.With(messageFields(m.d)...) })
	return m.l
}

func withLogger(ctx context.Context, base *zap.Logger, d *Delivery) context.Context {
	return context.WithValue(ctx, loggerKey{}, &msgLogger{base: base, d: d})
}

// Logger returns the logger of the message being handled, with the message
// fields set, or a no-op logger outside a handler.
func Logger(ctx context.Context) *zap.Logger {
	if m, ok := ctx.Value(loggerKey{}).(*msgLogger); ok {
		return m.get()
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

var eventMessage = map[Outcome]string{
	OutcomeAck: "message ack", OutcomeRetry: "message retry", OutcomeDeadLetter: "message dead_letter",
	OutcomeDuplicate: "message duplicate", OutcomeDiscard: "message discard", OutcomeRequeue: "message requeue",
}

// logEvent logs one message's outcome with the stable fields. Acks log at
// debug level so that a busy worker's log stays readable.
func logEvent(log *zap.Logger, j *job, res result, took time.Duration) {
	level := zapcore.InfoLevel
	switch {
	case res.Outcome == OutcomeAck, res.Kind == KindInProgress && res.Outcome == OutcomeRetry:
		// A copy waiting for its message to finish elsewhere is routine.
		level = zapcore.DebugLevel
	case res.Outcome == OutcomeDeadLetter, res.Outcome == OutcomeRequeue:
		level = zapcore.WarnLevel
	}
	ce := log.Check(level, eventMessage[res.Outcome])
	if ce == nil {
		return
	}
	fields := append(messageFields(j.d), zap.String("outcome", string(res.Outcome)), zap.Duration("duration", took))
	if res.err != nil {
		fields = append(fields, zap.String("error", res.err.Error()), zap.String("error_kind", res.Kind))
	}
	if res.Outcome == OutcomeRetry {
		fields = append(fields, zap.Duration("delay", res.Delay), zap.Bool("attempt_spent", res.spend))
	}
	if res.Reason != "" {
		fields = append(fields, zap.String("reason", res.Reason))
	}
	if j.stale {
		fields = append(fields, zap.Bool("result_dropped", true))
	}
	ce.Write(fields...)
}

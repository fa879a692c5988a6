package clientlog

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestSinkWritesCleanedLines(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := New("redis", Warn, func(l string) string { return strings.ReplaceAll(l, "s3cret", "xxxxx") })
	s.Printf("dropped before Route")
	stop := s.Route(zap.New(core).With(zap.String("service", "orders")))
	s.Redis().Printf(context.Background(), "redis: dial %s: %v\n", "redis://:s3cret@h:6379", "refused")
	stop()
	stop()
	s.Printf("dropped after stop")

	entries := logs.AllUntimed()
	if len(entries) != 1 {
		t.Fatalf("got %d entries, want 1: %v", len(entries), entries)
	}
	e := entries[0]
	if e.Level != zapcore.WarnLevel || e.Message != Message || e.LoggerName != "redis" {
		t.Errorf("entry level %v message %q logger %q, want warn %q redis", e.Level, e.Message, e.LoggerName, Message)
	}
	fields := e.ContextMap()
	if got := fields["line"]; got != "redis: dial redis://:xxxxx@h:6379: refused" {
		t.Errorf("line = %q, want the cleaned, trimmed line", got)
	}
	if fields["client"] != "redis" || fields["service"] != "orders" {
		t.Errorf("fields %v, want client=redis and the routed logger's service=orders", fields)
	}
}

func TestSinkSamples(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	level := func(l string) zapcore.Level {
		if strings.HasPrefix(l, "[debug]") {
			return zapcore.DebugLevel
		}
		return zapcore.WarnLevel
	}
	s := New("amqp", level, nil)
	defer s.Route(zap.New(core))()
	const flood = 1000
	for range flood {
		s.Printf("failed to dial")
	}
	// Within one tick: the first SampleFirst written, the rest dropped.
	if n := logs.Len(); n != SampleFirst {
		t.Fatalf("%d lines gave %d entries, want %d", flood, n, SampleFirst)
	}
	// Another level has its own budget, and the first entry written after
	// the drops says how many there were.
	s.Printf("[debug] other")
	entries := logs.AllUntimed()
	last := entries[len(entries)-1]
	if last.Level != zapcore.DebugLevel {
		t.Fatalf("last entry at %v, want debug", last.Level)
	}
	if got := last.ContextMap()["suppressed"]; got != int64(flood-SampleFirst) {
		t.Errorf("suppressed = %v, want %d", got, flood-SampleFirst)
	}
}

func TestSinkRespectsLevel(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := New("amqp", func(string) zapcore.Level { return zapcore.DebugLevel }, nil)
	defer s.Route(zap.New(core))()
	s.Printf("debug line")
	if logs.Len() != 0 {
		t.Errorf("a debug line reached an info logger: %v", logs.AllUntimed())
	}
}

// TestSinkRoutesStack: a Route's logger gets the lines while it is the
// latest in force; after its stop, the previous one gets them again.
func TestSinkRoutesStack(t *testing.T) {
	coreA, logsA := observer.New(zapcore.DebugLevel)
	coreB, logsB := observer.New(zapcore.DebugLevel)
	s := New("amqp", Warn, nil)
	stopA := s.Route(zap.New(coreA))
	stopB := s.Route(zap.New(coreB))
	s.Printf("one")
	stopB()
	s.Printf("two")
	stopA()
	s.Printf("three")
	if a, b := lines(logsA), lines(logsB); a != "two" || b != "one" {
		t.Errorf("A got %q, B got %q; want two and one", a, b)
	}
}

func lines(o *observer.ObservedLogs) string {
	var out []string
	for _, e := range o.AllUntimed() {
		out = append(out, e.ContextMap()["line"].(string))
	}
	return strings.Join(out, ",")
}

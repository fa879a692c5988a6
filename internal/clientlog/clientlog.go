package clientlog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Sampling of a Sink's entries, per level: the first SampleFirst entries
// of each SampleTick are written, the rest dropped and counted; the next
// entry written says how many were dropped before it ("suppressed").
const (
	SampleTick  = 10 * time.Second
	SampleFirst = 5
)

// Message is the message of every entry a Sink writes; the client's
// line is in the field "line", the client's name in "client".
const Message = "client library log"

// Sink receives a client library's lines and writes them to the logger
// of the latest Route still in force. Without one, lines are dropped. A
// Sink is safe for concurrent use.
type Sink struct {
	client  string
	level   func(line string) zapcore.Level
	clean   func(line string) string
	dropped atomic.Int64

	// mu is held for reading while a line is written, so that once the
	// stop function of a Route returned, its logger is never written to
	// again (a test's logger must not be used after its test ended).
	mu     sync.RWMutex
	routes []*route // in force, latest last
}

type route struct{ log *zap.Logger }

// New returns a Sink for the client library called client (a field of
// every entry and the name of the child logger). level chooses the level
// of a line; clean removes secrets from it (nil: none).
func New(client string, level func(line string) zapcore.Level, clean func(string) string) *Sink {
	if clean == nil {
		clean = func(s string) string { return s }
	}
	return &Sink{client: client, level: level, clean: clean}
}

// Warn puts every line at warn level: a client library logs what went
// wrong.
func Warn(string) zapcore.Level { return zapcore.WarnLevel }

// Route sends the lines to log, through a child logger named after the
// client and sampled (see SampleTick), until stop is called; then to the
// logger of the previous Route still in force, if any. stop may be
// called more than once. A nil log drops the lines while in force.
func (s *Sink) Route(log *zap.Logger) (stop func()) {
	if log == nil {
		log = zap.NewNop()
	}
	hook := zapcore.SamplerHook(func(_ zapcore.Entry, d zapcore.SamplingDecision) {
		if d&zapcore.LogDropped != 0 {
			s.dropped.Add(1)
		}
	})
	r := &route{log: log.Named(s.client).WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, SampleTick, SampleFirst, 0, hook)
	}))}
	s.mu.Lock()
	s.routes = append(s.routes, r)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.routes = slices.DeleteFunc(s.routes, func(x *route) bool { return x == r })
	}
}

// Printf writes one line; it has the signature of amqp091-go's Logging.
func (s *Sink) Printf(format string, v ...any) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.routes) == 0 {
		return
	}
	log := s.routes[len(s.routes)-1].log
	line := s.clean(strings.TrimSpace(fmt.Sprintf(format, v...)))
	ce := log.Check(s.level(line), Message)
	if ce == nil {
		return
	}
	fields := []zap.Field{zap.String("client", s.client), zap.String("line", line)}
	if n := s.dropped.Swap(0); n > 0 {
		fields = append(fields, zap.Int64("suppressed", n))
	}
	ce.Write(fields...)
}

// Redis returns the Sink as go-redis's Logging (a Printf with a context).
func (s *Sink) Redis() ContextPrintf { return ContextPrintf{s} }

// ContextPrintf adapts a Sink to loggers whose Printf takes a context.
type ContextPrintf struct{ s *Sink }

// Printf writes one line; the context is not used.
func (c ContextPrintf) Printf(_ context.Context, format string, v ...any) {
	c.s.Printf(format, v...)
}

package broker_test

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
)

// TestRouteClientLogs: a line amqp091-go logs becomes a zap entry of the
// routed logger, with the password of a URL in it redacted, at warn
// level but for amqp091-go's "[debug]" lines; after stop, none.
func TestRouteClientLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	stop := broker.RouteClientLogs(zap.New(core).With(zap.String("service", "test")))
	amqp.Logger.Printf("Connection %s recovery failed: %v.", "amqp://guest:s3cr3tpassw0rd@h:5672/", "EOF")
	amqp.Logger.Printf("[debug] dropping frame, channel %d does not exist", 7)
	stop()
	amqp.Logger.Printf("after stop")

	entries := logs.AllUntimed()
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2: %v", len(entries), entries)
	}
	first, second := entries[0], entries[1]
	if first.Level != zapcore.WarnLevel || second.Level != zapcore.DebugLevel {
		t.Errorf("levels %v, %v; want warn, debug", first.Level, second.Level)
	}
	line, _ := first.ContextMap()["line"].(string)
	if strings.Contains(line, "s3cr3tpassw0rd") || !strings.Contains(line, "amqp://guest:xxxxx@h:5672/") {
		t.Errorf("line %q, want the URL with its password redacted", line)
	}
	if f := first.ContextMap(); f["service"] != "test" || f["client"] != "amqp091" {
		t.Errorf("fields %v, want the routed logger's service=test and client=amqp091", f)
	}
}

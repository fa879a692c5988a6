package broker

import (
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/warrenmq/warren/internal/clientlog"
	"github.com/warrenmq/warren/internal/redact"
)

// amqpLogs receives every line amqp091-go logs. The library's logger is a
// plain package variable, unsafe to set while connections run, so it is
// set once, here, before main runs; RouteClientLogs only changes where
// the lines go. Until then they are dropped, as amqp091-go's own default
// does. A program that calls amqp.SetLogger itself takes them over.
var amqpLogs = clientlog.New("amqp091", amqpLevel, redact.Text)

func init() { amqp.SetLogger(amqpLogs) }

// RouteClientLogs sends what amqp091-go logs, process-wide, to log as
// zap entries (message "client library log", the line in the field
// "line", passwords in URLs redacted) until stop is called. Lines are
// warnings, but for amqp091-go's "[debug]" lines. They are sampled: at
// most 5 entries per level every 10 s; the next one written says how many
// were dropped ("suppressed"). While several routes are in force the
// latest gets the lines; after stop, log is never written to again.
//
//	defer broker.RouteClientLogs(logger)()
func RouteClientLogs(log *zap.Logger) (stop func()) { return amqpLogs.Route(log) }

func amqpLevel(line string) zapcore.Level {
	if strings.HasPrefix(line, "[debug]") {
		return zapcore.DebugLevel
	}
	return zapcore.WarnLevel
}

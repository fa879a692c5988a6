package dedupe

import (
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/internal/clientlog"
	"github.com/warrenmq/warren/internal/redact"
)

var (
	// redisLogs receives every line go-redis logs, once RouteClientLogs
	// installed it.
	redisLogs    = clientlog.New("go-redis", clientlog.Warn, redact.Text)
	installRedis sync.Once
)

// RouteClientLogs sends what go-redis logs, process-wide (its connection
// pool's "failed to dial after 5 attempts" while Redis is down, for one),
// to log as warn-level zap entries (message "client library log", the
// line in the field "line", passwords in URLs redacted) until stop is
// called. They are sampled: at most 5 entries every 10 s; the next one
// written says how many were dropped ("suppressed"). While several routes
// are in force the latest gets the lines; after stop, log is never
// written to again. Before the first call go-redis writes to standard
// error, its default; after it, lines with no route in force are dropped.
//
//	defer dedupe.RouteClientLogs(logger)()
func RouteClientLogs(log *zap.Logger) (stop func()) {
	installRedis.Do(func() { redis.SetLogger(redisLogs.Redis()) })
	return redisLogs.Route(log)
}

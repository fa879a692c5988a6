// Package clientlog turns the printf-style lines that client libraries
// log through a process-wide hook (go-redis, amqp091-go) into zap
// entries of the logger the program routes them to, cleaned of secrets
// and sampled, so that a server that is down cannot flood the log.
//
// Each client package of warren owns one Sink for its library and
// installs it in that library's hook:
//
//	var sink = clientlog.New("redis", clientlog.Warn, redact.Text)
//	redis.SetLogger(sink.Redis())
//	stop := sink.Route(logger)
//	defer stop()
package clientlog

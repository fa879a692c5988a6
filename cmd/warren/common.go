package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/worker"
)

// loadConfigQuiet reads the WARREN_* environment for a one-off command,
// which logs only warnings and errors, for people, unless
// WARREN_LOG_LEVEL or WARREN_LOG_FORMAT say otherwise.
func loadConfigQuiet() (worker.Config, *zap.Logger, error) {
	cfg, err := worker.FromEnv()
	if err != nil {
		return cfg, nil, err
	}
	if os.Getenv("WARREN_LOG_LEVEL") == "" {
		cfg.LogLevel = "warn"
	}
	if os.Getenv("WARREN_LOG_FORMAT") == "" {
		cfg.LogFormat = "console"
	}
	log, err := worker.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Logger = log
	// What the AMQP and Redis clients log goes through log, for the rest
	// of the command.
	broker.RouteClientLogs(log)
	dedupe.RouteClientLogs(log)
	return cfg, log, nil
}

// connect reads the environment and connects, for a one-off command.
func connect(ctx context.Context) (*broker.Conn, error) {
	cfg, log, err := loadConfigQuiet()
	if err != nil {
		return nil, err
	}
	return dialBroker(ctx, cfg, log)
}

// dialBroker connects for a one-off command, giving up after 30s.
func dialBroker(ctx context.Context, cfg worker.Config, log *zap.Logger) (*broker.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return broker.Dial(ctx, broker.Config{URL: cfg.AMQPURL, Name: "warren-cli", Logger: log, TracerProvider: tracerOf(ctx)})
}

// parseHeaders turns k=v pairs into headers.
func parseHeaders(pairs []string) (map[string]any, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	h := make(map[string]any, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("header %q: want name=value", p)
		}
		h[k] = v
	}
	return h, nil
}

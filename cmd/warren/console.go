package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/console"
	"github.com/warrenmq/warren/internal/redact"
	"github.com/warrenmq/warren/worker"
)

func consoleCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("console", "[flags] route...  (a queue name, or a prefix ending in *)")
	addr := fs.String("addr", envOr("WARREN_CONSOLE_ADDR", console.DefaultAddr), "address to listen on (default WARREN_CONSOLE_ADDR or "+console.DefaultAddr+")")
	mgmt := managementFlag(fs)
	readOnly := fs.Bool("read-only", os.Getenv("WARREN_CONSOLE_READ_ONLY") == "true", "refuse every state change: no replay (dry runs only), no purge (default WARREN_CONSOLE_READ_ONLY=true)")
	insecure := fs.Bool("insecure-no-auth", false, "allow anyone who reaches the address, without a token or password")
	routes, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(routes) == 0 {
		return errors.New("console: name at least one route (a queue, or a prefix ending in *)")
	}
	auth, err := console.AuthFromEnv(*insecure)
	if err != nil {
		return err
	}
	cfg, err := worker.FromEnv()
	if err != nil {
		return err
	}
	log, err := worker.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	conn, err := dialBroker(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	ccfg := console.Config{Conn: conn, Routes: routes, Delays: cfg.RetryDelays, ReadOnly: *readOnly, Auth: auth, Logger: log}
	if u := mgmt.get(); u != "" {
		ccfg.Management = &dlq.Management{URL: u, Vhost: conn.Vhost()}
	}
	return serveConsole(ctx, ccfg, *addr, out, log)
}

func serveConsole(ctx context.Context, cfg console.Config, addr string, out io.Writer, log *zap.Logger) error {
	c, err := console.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("console: listening on %s: %w", addr, err)
	}
	if host, _, _ := net.SplitHostPort(addr); !isLoopback(host) {
		log.Warn("console: listening beyond this machine without TLS; put it behind a TLS proxy", zap.String("addr", addr))
	}
	mgmt := ""
	if cfg.Management != nil {
		mgmt = " (management API " + redact.URL(cfg.Management.URL) + ")"
	}
	fmt.Fprintf(out, "warren console on http://%s%s\n", ln.Addr(), mgmt)
	return c.Serve(ctx, ln)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

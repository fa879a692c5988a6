package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/warrenmq/warren/worker"
)

// ExitPermanent is the exit code with which an exec handler asks for its
// message to be dead-lettered at once (EX_DATAERR).
const ExitPermanent = 65

// ExitUnavailable is the exit code with which an exec handler says that
// its dependency is down (EX_TEMPFAIL): worker.Unavailable, the message
// goes back without spending an attempt and the route pauses.
const ExitUnavailable = 75

func runCmd(ctx context.Context, args []string, _ io.Writer) error {
	fs := flags("run", "-queue Q (-exec 'command args' | -http URL) [flags]")
	queue := fs.String("queue", "", "queue to consume (required)")
	exchange := fs.String("exchange", "", "exchange to declare and bind the queue to")
	kind := fs.String("exchange-kind", "topic", "exchange kind")
	var keys multi
	fs.Var(&keys, "binding-key", "binding key (repeatable; default the queue name)")
	execLine := fs.String("exec", "", "command to run per message: body on stdin, metadata in WARREN_MSG_* env vars")
	url := fs.String("http", "", "URL to POST each message to")
	conc := fs.Int("concurrency", 0, "handlers at once (default WARREN_CONCURRENCY)")
	timeout := fs.Duration("timeout", 0, "handler timeout (default WARREN_HANDLER_TIMEOUT)")
	flow := addFlowFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	flow.seen(fs)
	if len(pos) > 0 {
		return fmt.Errorf("run: unexpected argument %q (quote the -exec command line)", pos[0])
	}
	if *queue == "" {
		return errors.New("run: -queue is required")
	}
	h, err := bridge(*execLine, *url)
	if err != nil {
		return err
	}
	cfg, err := worker.FromEnv()
	if err != nil {
		return err
	}
	route := worker.Route{
		Queue: *queue, Exchange: *exchange, ExchangeKind: *kind, BindingKeys: keys,
		Concurrency: *conc, Timeout: *timeout, Handler: h,
	}
	if err := flow.apply(&route, cfg); err != nil {
		return err
	}
	cfg.TracerProvider = tracerOf(ctx)
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	// What the AMQP and Redis clients log goes through the worker's logger.
	if err := w.Handle(route); err != nil {
		return err
	}
	return w.Run(ctx)
}

func bridge(execLine, url string) (worker.Handler, error) {
	switch {
	case execLine != "" && url != "":
		return nil, errors.New("run: give -exec or -http, not both")
	case execLine != "":
		return newExecHandler(strings.Fields(execLine))
	case url != "":
		return newHTTPHandler(url)
	}
	return nil, errors.New("run: one of -exec or -http is required")
}

// metadata returns the message's metadata as name/value pairs, shared by
// the exec (environment) and HTTP (header) bridges.
func metadata(d *worker.Delivery) [][2]string {
	md := [][2]string{
		{"MESSAGE_ID", d.MessageID},
		{"CORRELATION_ID", d.CorrelationID},
		{"ROUTING_KEY", d.RoutingKey},
		{"EXCHANGE", d.Exchange},
		{"QUEUE", d.Queue},
		{"ATTEMPT", fmt.Sprint(d.Attempt)},
		{"MAX_ATTEMPTS", fmt.Sprint(d.MaxAttempts)},
		{"CONTENT_TYPE", d.ContentType},
		{"IDEMPOTENCY_KEY", d.IdempotencyKey},
	}
	for k, v := range d.Headers {
		md = append(md, [2]string{"HEADER_" + headerName(k), fmt.Sprint(v)})
	}
	return md
}

// headerName makes a header name safe for an environment variable.
func headerName(k string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, k)
}

// retryAfterDelay parses a Retry-After value: seconds or an HTTP date.
func retryAfterDelay(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var secs int
	if _, err := fmt.Sscanf(v, "%d", &secs); err == nil && secs >= 0 && fmt.Sprint(secs) == strings.TrimSpace(v) {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

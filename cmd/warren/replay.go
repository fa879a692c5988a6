package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

type replayOpts struct {
	queue    string
	limit    int
	grep     string
	dryRun   bool
	original bool
}

func dlqReplay(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq replay", "[flags] queue")
	var o replayOpts
	fs.IntVar(&o.limit, "limit", 0, "replay at most this many messages (0: all)")
	fs.StringVar(&o.grep, "grep", "", "replay only messages whose error text contains this")
	fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be replayed; change nothing")
	fs.BoolVar(&o.original, "original-route", false, "publish to the original exchange and routing key (reaching every queue bound there) instead of the queue alone")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("dlq replay: name one queue")
	}
	o.queue = strings.TrimSuffix(pos[0], ".dlq")
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	r, err := conn.NewReader(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	return replay(ctx, r, pub, o, out, os.Stderr)
}

// replay moves dead letters back to their queue (through the default
// exchange, so no other queue bound to the original exchange sees them
// again) or, with -original-route, to the original exchange and key, acking each only after its copy is
// confirmed. Messages it skips stay unacked and go back to the
// dead-letter queue when the reader closes.
func replay(ctx context.Context, r *broker.Reader, pub *broker.Publisher, o replayOpts, out, progress io.Writer) error {
	dlq := dlqName(o.queue)
	replayed, skipped := 0, 0
	for o.limit == 0 || replayed < o.limit {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok, err := r.Get(dlq)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		errText, _ := d.Headers[worker.HeaderError].(string)
		if o.grep != "" && !strings.Contains(errText, o.grep) {
			skipped++
			continue
		}
		exchange, key := target(d, o)
		if o.dryRun {
			fmt.Fprintf(out, "would replay %s to exchange %q with routing key %q (error: %s)\n", d.MessageID, exchange, key, errText)
			replayed++
			continue
		}
		if err := replayOne(ctx, pub, d, dlq, exchange, key); err != nil {
			return fmt.Errorf("replaying %s (it stays in %s): %w", d.MessageID, dlq, err)
		}
		if err := r.Ack(d); err != nil {
			return fmt.Errorf("removing %s from %s after its replay: %w", d.MessageID, dlq, err)
		}
		replayed++
		if replayed%100 == 0 {
			fmt.Fprintf(progress, "replayed %d...\n", replayed)
		}
	}
	verb := "replayed"
	if o.dryRun {
		verb = "would replay"
	}
	fmt.Fprintf(out, "%s %d messages from %s (%d skipped by -grep)\n", verb, replayed, dlq, skipped)
	return nil
}

// replayOne publishes d's fresh copy. With tracing on it does so under a
// span "replay <dlq>" that starts a trace of its own, linked to the trace
// the dead letter carries (the message's trace, across its attempts): the
// copy then carries the replay's trace.
func replayOne(ctx context.Context, pub *broker.Publisher, d *broker.Delivery, dlq, exchange, key string) error {
	m := fresh(d)
	tp := tracerOf(ctx)
	if tp == nil {
		return pub.Publish(ctx, exchange, key, m, broker.KeepMessageID())
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(append(broker.MessageAttributes(exchange, key, &m),
			broker.AttrOperationName.String("replay"), attribute.String("warren.dlq", dlq))...)}
	if sc := broker.SpanContextOf(d.Headers); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc,
			Attributes: []attribute.KeyValue{attribute.String("warren.link", "dead_letter")}}))
	}
	ctx, span := tp.Tracer(broker.TracerName).Start(ctx, "replay "+dlq, opts...)
	err := pub.Publish(ctx, exchange, key, m, broker.KeepMessageID())
	broker.EndSpan(span, err)
	return err
}

func target(d *broker.Delivery, o replayOpts) (exchange, key string) {
	ex, okEx := d.Headers[worker.HeaderOriginalExchange].(string)
	k, okKey := d.Headers[worker.HeaderOriginalKey].(string)
	if !o.original || !okEx || !okKey || ex == "" {
		return "", o.queue
	}
	return ex, k
}

// fresh is the dead letter as a new message: the same body, properties and
// id, without the failure and attempt headers.
func fresh(d *broker.Delivery) broker.Message {
	m := d.Message
	h := make(map[string]any, len(m.Headers))
	for k, v := range m.Headers {
		h[k] = v
	}
	for _, k := range failureHeaders {
		delete(h, k)
	}
	m.Headers = h
	return m
}

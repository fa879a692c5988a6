package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/warrenmq/warren/dlq"
)

func dlqReplay(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq replay", "[flags] queue")
	var o dlq.ReplayOptions
	fs.IntVar(&o.Limit, "limit", 0, "replay at most this many messages (0: all)")
	grep := fs.String("grep", "", "replay only messages whose error text contains this")
	fs.BoolVar(&o.DryRun, "dry-run", false, "list what would be replayed; change nothing")
	fs.BoolVar(&o.OriginalRoute, "original-route", false, "publish to the original exchange and routing key (reaching every queue bound there) instead of the queue alone")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("dlq replay: name one queue")
	}
	o.Queue = pos[0]
	o.TracerProvider = tracerOf(ctx)
	if *grep != "" {
		o.Match = func(l *dlq.Letter) bool { return strings.Contains(l.Error, *grep) }
	}
	if o.DryRun {
		o.OnLetter = func(l *dlq.Letter, exchange, key string) {
			fmt.Fprintf(out, "would replay %s to exchange %q with routing key %q (error: %s)\n", forTerminal(l.MessageID), exchange, key, forTerminal(l.Error))
		}
	}
	last := 0
	o.Progress = func(r dlq.ReplayResult) {
		if !o.DryRun && r.Replayed/100 > last/100 {
			fmt.Fprintf(os.Stderr, "replayed %d...\n", r.Replayed)
		}
		last = r.Replayed
	}
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	res, err := dlq.Replay(ctx, conn, pub, o)
	verb := "replayed"
	if o.DryRun {
		verb = "would replay"
	}
	// The counts also after an error: what moved, and what stays.
	fmt.Fprintf(out, "%s %d messages from %s (%d skipped by -grep)\n", verb, res.Replayed, res.DLQ, res.Skipped)
	if res.Refused > 0 {
		fmt.Fprintf(out, "%d messages refused by the broker (unroutable, nacked or too large) stay in %s\n", res.Refused, res.DLQ)
	}
	if res.NotRemoved > 0 {
		fmt.Fprintf(out, "%d messages were replayed but could not be removed from %s: they are there still, and replaying them again runs them twice\n", res.NotRemoved, res.DLQ)
	}
	return err
}

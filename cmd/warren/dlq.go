package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

func dlqCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("dlq: want a subcommand: ls, show, replay or purge")
	}
	sub := map[string]func(context.Context, []string, io.Writer) error{
		"ls": dlqLs, "show": dlqShow, "replay": dlqReplay, "purge": dlqPurge,
	}[args[0]]
	if sub == nil {
		return fmt.Errorf("dlq: unknown subcommand %q (want ls, show, replay or purge)", args[0])
	}
	return sub(ctx, args[1:], out)
}

// dlqName accepts a queue or its dead-letter queue.
func dlqName(q string) string {
	if strings.HasSuffix(q, ".dlq") {
		return q
	}
	return retry.DLQ(q)
}

func dlqLs(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq ls", "[flags] queue...  (or -management-url to list every .dlq)")
	mgmt := fs.String("management-url", os.Getenv("WARREN_MANAGEMENT_URL"), "RabbitMQ management API, e.g. http://guest:guest@localhost:15672 (default WARREN_MANAGEMENT_URL)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	names := pos
	if len(names) == 0 {
		if *mgmt == "" {
			return errors.New("dlq ls: name the queues, or give -management-url to list every dead-letter queue")
		}
		var err error
		if names, err = listDLQs(ctx, *mgmt); err != nil {
			return err
		}
	}
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	sort.Strings(names)
	fmt.Fprintf(out, "%-50s %10s\n", "DEAD-LETTER QUEUE", "MESSAGES")
	for _, n := range names {
		info, err := conn.Inspect(ctx, dlqName(n))
		if err != nil {
			fmt.Fprintf(out, "%-50s %10s\n", dlqName(n), "missing")
			continue
		}
		fmt.Fprintf(out, "%-50s %10d\n", info.Name, info.Messages)
	}
	return nil
}

func dlqShow(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq show", "[flags] queue")
	limit := fs.Int("limit", 10, "show at most this many messages")
	bodyBytes := fs.Int("body-bytes", 512, "show at most this many bytes of each body")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("dlq show: name one queue")
	}
	return withReader(ctx, func(r *broker.Reader) error {
		q := dlqName(pos[0])
		for i := 0; i < *limit; i++ {
			d, ok, err := r.Get(q)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			printDeadLetter(out, i+1, d, *bodyBytes)
		}
		return nil // closing the reader puts every message back
	})
}

func printDeadLetter(out io.Writer, n int, d *broker.Delivery, bodyBytes int) {
	fmt.Fprintf(out, "--- %d: message %s\n", n, d.MessageID)
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  %s: %v\n", k, d.Headers[k])
	}
	body := d.Body
	cut := ""
	if len(body) > bodyBytes {
		body, cut = body[:bodyBytes], fmt.Sprintf(" ... (%d bytes in all)", len(d.Body))
	}
	if utf8.Valid(body) {
		fmt.Fprintf(out, "  body: %s%s\n", body, cut)
	} else {
		fmt.Fprintf(out, "  body: %q%s\n", body, cut)
	}
}

func dlqPurge(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq purge", "[-yes] queue")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("dlq purge: name one queue")
	}
	q := dlqName(pos[0])
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	info, err := conn.Inspect(ctx, q)
	if err != nil {
		return err
	}
	if !*yes && !confirm(out, fmt.Sprintf("delete all %d messages of %s for good? [y/N] ", info.Messages, q)) {
		return errors.New("dlq purge: not confirmed; nothing deleted")
	}
	n, err := conn.Purge(ctx, q)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "purged %d messages from %s\n", n, q)
	return nil
}

func confirm(out io.Writer, prompt string) bool {
	fmt.Fprint(out, prompt)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	line = strings.ToLower(strings.TrimSpace(line))
	return line == "y" || line == "yes"
}

// withReader connects and runs fn with a Reader, closing both after.
func withReader(ctx context.Context, fn func(*broker.Reader) error) error {
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	r, err := conn.NewReader(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

// failureHeaders are removed from a replayed message, so that it starts
// over at attempt 1.
var failureHeaders = []string{retry.AttemptHeader, worker.HeaderError, worker.HeaderErrorKind,
	worker.HeaderDeadLetterReason, worker.HeaderQueue, worker.HeaderHandler, worker.HeaderAttempts,
	worker.HeaderFirstFailure, worker.HeaderLastFailure, worker.HeaderHost,
	worker.HeaderOriginalExchange, worker.HeaderOriginalKey}

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

	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/redact"
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

// managementURL is the -management-url flag; without it,
// WARREN_MANAGEMENT_URL. The environment is read after parsing, so that
// -h never prints a password as the flag's default.
type managementURL struct{ v string }

func managementFlag(fs interface {
	StringVar(p *string, name, value, usage string)
}) *managementURL {
	m := &managementURL{}
	fs.StringVar(&m.v, "management-url", "", "RabbitMQ management API, e.g. http://guest:guest@localhost:15672 (default WARREN_MANAGEMENT_URL)")
	return m
}

func (m *managementURL) get() string {
	if m.v != "" {
		return m.v
	}
	return os.Getenv("WARREN_MANAGEMENT_URL")
}

func dlqLs(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("dlq ls", "[flags] queue...  (or -management-url to list every .dlq)")
	mgmt := managementFlag(fs)
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 && mgmt.get() == "" {
		return errors.New("dlq ls: name the queues, or give -management-url to list every dead-letter queue")
	}
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(names) == 0 {
		if names, err = (dlq.Management{URL: mgmt.get(), Vhost: conn.Vhost()}).DLQs(ctx); err != nil {
			return err
		}
	}
	sort.Strings(names)
	fmt.Fprintf(out, "%-50s %10s\n", "DEAD-LETTER QUEUE", "MESSAGES")
	for _, n := range names {
		info, err := conn.Inspect(ctx, dlq.Name(n))
		if err != nil {
			fmt.Fprintf(out, "%-50s %10s\n", dlq.Name(n), "missing")
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
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	letters, err := dlq.Peek(ctx, conn, pos[0], *limit)
	if err != nil {
		return err
	}
	for i, l := range letters {
		printDeadLetter(out, i+1, l, *bodyBytes)
	}
	return nil
}

func printDeadLetter(out io.Writer, n int, l *dlq.Letter, bodyBytes int) {
	fmt.Fprintf(out, "--- %d: message %s\n", n, forTerminal(l.MessageID))
	keys := make([]string, 0, len(l.Headers))
	for k := range l.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  %s: %s\n", forTerminal(k), forTerminal(redact.Header(k, l.Headers[k])))
	}
	b := dlq.ShowBody(l.Body, dlq.AsText, bodyBytes)
	cut := ""
	if b.Cut {
		cut = fmt.Sprintf(" ... (%d bytes in all)", b.Size)
	}
	if b.Format == dlq.AsText {
		fmt.Fprintf(out, "  body: %s%s\n", forTerminal(b.Text), cut)
	} else {
		fmt.Fprintf(out, "  body: %q%s\n", l.Body[:min(len(l.Body), bodyBytes)], cut)
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
	q := dlq.Name(pos[0])
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

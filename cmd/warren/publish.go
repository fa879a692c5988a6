package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/warrenmq/warren/broker"
)

func publishCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("publish", "[flags] [body]  (body from the argument, -file, or standard input)")
	exchange := fs.String("exchange", "", "exchange to publish to (\"\" is the default exchange)")
	key := fs.String("routing-key", "", "routing key (a queue name with the default exchange)")
	file := fs.String("file", "", "read the body from this file (- for standard input)")
	id := fs.String("message-id", "", "message id (generated when empty)")
	ctype := fs.String("content-type", "", "content type, e.g. application/json")
	corr := fs.String("correlation-id", "", "correlation id")
	var headers multi
	fs.Var(&headers, "header", "header name=value (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	body, err := readBody(pos, *file)
	if err != nil {
		return err
	}
	h, err := parseHeaders(headers)
	if err != nil {
		return err
	}
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	msg := broker.Message{Body: body, Headers: h, MessageID: *id, ContentType: *ctype, CorrelationID: *corr}
	if msg.MessageID == "" {
		msg.MessageID = broker.NewMessageID()
	}
	if err := pub.Publish(ctx, *exchange, *key, msg); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %s (%d bytes) to exchange %q with routing key %q: confirmed\n", msg.MessageID, len(body), *exchange, *key)
	return nil
}

func readBody(args []string, file string) ([]byte, error) {
	switch {
	case len(args) > 1:
		return nil, errors.New("give the body as one argument (quote it)")
	case len(args) == 1 && file != "":
		return nil, errors.New("give the body either as an argument or with -file, not both")
	case len(args) == 1:
		return []byte(args[0]), nil
	case file == "" || file == "-":
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	return b, nil
}

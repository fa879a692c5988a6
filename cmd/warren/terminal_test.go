package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dlq"
)

func TestForTerminal(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcode":        "plain text, ünïcode",
		"two\nlines\tand a tab":      "two\nlines\tand a tab",
		"\x1b]52;c;cGF5bG9hZA==\x07": `\x1b]52;c;cGF5bG9hZA==\a`,
		"shown\rhidden":              `shown\rhidden`,
		"del\x7f c1\u009b":           `del\x7f c1\u009b`,
		"abc\u202edcba":              `abc\u202edcba`,
		"isolate\u2066x\u2069":       `isolate\u2066x\u2069`,
		"bad utf-8 \xff":             "bad utf-8 \ufffd",
	} {
		if got := forTerminal(in); got != want {
			t.Errorf("forTerminal(%q) = %q, want %q", in, got, want)
		}
	}
}

// What `warren dlq show` prints of a letter carries no byte a terminal
// would act on, wherever the producer put it.
func TestDeadLetterPrintsNoTerminalControls(t *testing.T) {
	const esc = "\x1b[2J\x1b]0;title\x07"
	l := &dlq.Letter{Delivery: &broker.Delivery{Message: broker.Message{
		MessageID: "id" + esc,
		Headers:   map[string]any{"warren-error": "failed" + esc, "x" + esc: "v"},
		Body:      []byte("{\"a\":\n\"b" + esc + "\u202e\"}"),
	}}}
	var out bytes.Buffer
	printDeadLetter(&out, 1, l, 512)
	got := out.String()
	if strings.IndexFunc(got, actsOnTerminal) >= 0 {
		t.Fatalf("output holds terminal controls: %q", got)
	}
	for _, want := range []string{`message id\x1b[2J`, `warren-error: failed\x1b[2J`, `x\x1b[2J\x1b]0;title\a: v`, "body: {\"a\":\n\"b\\x1b[2J", `\u202e`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

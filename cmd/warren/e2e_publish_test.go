package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
)

// TestE2EPublish: the body from -file, standard input and -file -,
// headers, properties and ids, and the errors of unroutable and bad
// publishes.
func TestE2EPublish(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	admin.DeclareQueue(q)
	e := baseEnv()

	file := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(file, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustWarren(t, e, "publish", "-routing-key", q, "-file", file, "-message-id", "p-file")
	if want := `published p-file (15 bytes) to exchange "" with routing key "` + q + `": confirmed`; !strings.Contains(r.stdout, want) {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	r = warren(t, e, strings.NewReader("from stdin\nline two\n"), "publish", "-routing-key", q, "-message-id", "p-stdin")
	if r.code != 0 {
		t.Fatalf("publish from stdin\n%s", r)
	}
	r = warren(t, e, strings.NewReader("dash"), "publish", "-file", "-", "-routing-key", q, "-message-id", "p-dash")
	if r.code != 0 {
		t.Fatalf("publish -file -\n%s", r)
	}
	// Flags after the body, a value with '=' in it, properties.
	mustWarren(t, e, "publish", "-routing-key", q, "hdr-body", "-header", "tenant=acme", "-header", "expr=a=b",
		"-message-id", "p-hdr", "-correlation-id", "c-1", "-content-type", "text/plain")
	// No -message-id: one is generated and printed.
	r = mustWarren(t, e, "publish", "-routing-key", q, "anon")
	fields := strings.Fields(r.stdout)
	if len(fields) < 2 || fields[0] != "published" {
		t.Fatalf("stdout %q", r.stdout)
	}
	genID := fields[1]

	got := admin.GetAll(q)
	if len(got) != 5 {
		t.Fatalf("%s holds %d messages, want 5", q, len(got))
	}
	check := func(d amqp.Delivery, id, body string) {
		t.Helper()
		if d.MessageId != id || string(d.Body) != body {
			t.Errorf("message %q body %q, want %q body %q", d.MessageId, d.Body, id, body)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("%s: delivery mode %d, want persistent", id, d.DeliveryMode)
		}
	}
	check(got[0], "p-file", `{"from":"file"}`)
	check(got[1], "p-stdin", "from stdin\nline two\n")
	check(got[2], "p-dash", "dash")
	check(got[3], "p-hdr", "hdr-body")
	check(got[4], genID, "anon")
	if h := got[3].Headers; h["tenant"] != "acme" || h["expr"] != "a=b" || len(h) != 2 {
		t.Errorf("headers %v, want tenant=acme expr=a=b", h)
	}
	if got[3].CorrelationId != "c-1" || got[3].ContentType != "text/plain" {
		t.Errorf("correlation id %q content type %q", got[3].CorrelationId, got[3].ContentType)
	}
	if genID == "" || genID == "p-hdr" {
		t.Errorf("generated id %q", genID)
	}

	t.Run("unroutable", func(t *testing.T) {
		key := testenv.Name(t)
		r := warren(t, e, nil, "publish", "-exchange", "amq.direct", "-routing-key", key, "-message-id", "p-lost", "lost")
		if r.code == 0 || !strings.Contains(r.stderr, "unroutable") {
			t.Errorf("want a non-zero exit and \"unroutable\" in stderr\n%s", r)
		}
		if strings.Contains(r.stdout, "confirmed") {
			t.Errorf("an unroutable publish was reported confirmed\n%s", r)
		}
	})
	t.Run("missing exchange", func(t *testing.T) {
		r := warren(t, e, nil, "publish", "-exchange", testenv.Name(t), "-routing-key", q, "x")
		if r.code == 0 || !strings.Contains(r.stderr, "NOT_FOUND") {
			t.Errorf("want a non-zero exit naming NOT_FOUND\n%s", r)
		}
	})
	t.Run("bad invocations", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"publish", "-routing-key", q, "-header", "novalue", "x"}, "want name=value"},
			{[]string{"publish", "-routing-key", q, "-file", file, "x"}, "not both"},
			{[]string{"publish", "-routing-key", q, "a", "b"}, "one argument"},
			{[]string{"publish", "-routing-key", q, "-file", filepath.Join(t.TempDir(), "none")}, "reading the body"},
		} {
			r := warren(t, e, nil, c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("want a non-zero exit and %q in stderr\n%s", c.want, r)
			}
		}
		if n := admin.Count(q); n != 0 {
			t.Errorf("bad invocations published %d messages", n)
		}
	})
}

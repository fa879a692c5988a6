package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// collector is an OTLP/HTTP trace receiver: it decodes the protobuf
// ExportTraceServiceRequest each exporter posts to /v1/traces.
type collector struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []span
	bad   []string
}

// span is what the tests look at in a received span.
type span struct {
	trace, id, parent string
	name              string
	kind              tracepb.Span_SpanKind
	attrs             map[string]string
	links             []string // "<trace>/<span>"
	events            []string
	service           string
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(c.export))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) export(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.mu.Lock()
		c.bad = append(c.bad, fmt.Sprintf("%s %s %s: %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err))
		c.mu.Unlock()
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := attrString(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, spanOf(s, service))
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func spanOf(s *tracepb.Span, service string) span {
	sp := span{trace: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
		name: s.Name, kind: s.Kind, attrs: attrString(s.Attributes), service: service}
	for _, l := range s.Links {
		sp.links = append(sp.links, hex.EncodeToString(l.TraceId)+"/"+hex.EncodeToString(l.SpanId))
	}
	for _, e := range s.Events {
		sp.events = append(sp.events, e.Name)
	}
	return sp
}

func attrString(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = fmt.Sprint(v.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = fmt.Sprint(v.BoolValue)
		}
	}
	return m
}

// find returns the spans for which keep is true.
func (c *collector) find(keep func(span) bool) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

func (c *collector) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, s := range c.spans {
		fmt.Fprintf(&b, "%s %s parent=%s %s %v id=%s links=%v attrs=%v\n", s.service, s.trace, s.parent, s.name, s.kind, s.id, s.links, s.attrs)
	}
	for _, x := range c.bad {
		fmt.Fprintln(&b, "bad export:", x)
	}
	return b.String()
}

// env is the OTEL_* configuration that points a warren process at c.
func (c *collector) env(e env, service string) env {
	return e.with("OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT", c.srv.URL, "OTEL_SERVICE_NAME", service, "OTEL_BSP_SCHEDULE_DELAY", "100")
}

// TestE2ETraces: with tracing configured only through OTEL_* variables
// (the real OTLP/HTTP exporter, to a receiver in the test), a message
// that fails twice and then succeeds is one trace: the publish, and the
// three handler runs each a child of the retry copy's publish before it;
// TRACEPARENT names each run's span to the exec handler; a dead letter's
// publish is a child of its last run, and `dlq replay` starts a trace
// linked to it, which the replayed message's run continues.
func TestE2ETraces(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	col := newCollector(t)
	e := baseEnv()
	dir := t.TempDir()
	log := lineLog(filepath.Join(dir, "runs.log"))
	fixed := filepath.Join(dir, "fixed")
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
printf '%%s %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" "$TRACEPARENT" >> '%s'
case "$body" in
twice) [ "$WARREN_MSG_ATTEMPT" -ge 3 ] && exit 0; echo "not yet" >&2; exit 1 ;;
doomed) [ -e '%s' ] && exit 0; echo "cannot handle it" >&2; exit 65 ;;
esac
exit 1
`, log, fixed))

	w := startRun(t, col.env(e, "worker"), "-queue", q, "-exec", script)
	mustWarren(t, col.env(e, "publisher"), "publish", "-routing-key", q, "-message-id", "m-twice", "-correlation-id", "c-1", "twice")
	mustWarren(t, col.env(e, "publisher"), "publish", "-routing-key", q, "-message-id", "m-doomed", "doomed")
	waitFor(t, settleWait, "three runs of m-twice and the dead letter", func() bool {
		return len(runs(log, "m-twice")) == 3 && len(runs(log, "m-doomed")) == 1 && queueDepth(t, admin, q+".dlq") == 1
	})
	w.stop() // flushes the worker's spans

	// One trace for m-twice: its publish, three runs, two retry copies.
	pub := col.find(func(s span) bool { return s.service == "publisher" && s.attrs["messaging.message.id"] == "m-twice" })
	if len(pub) != 1 {
		t.Fatalf("want one publish span of m-twice, got %d\n%s", len(pub), col.dump())
	}
	p := pub[0]
	if p.name != "publish "+q || p.kind != tracepb.Span_SPAN_KIND_PRODUCER || p.parent != "" {
		t.Errorf("publish span: %q %v parent %q, want %q, producer, a root", p.name, p.kind, p.parent, "publish "+q)
	}
	wantAttrs(t, p, map[string]string{"messaging.system": "rabbitmq", "messaging.destination.name": "",
		"messaging.operation.type": "send", "messaging.rabbitmq.destination.routing_key": q,
		"messaging.message.conversation_id": "c-1", "messaging.message.body.size": "5"})
	var runSpans []span
	waitFor(t, settleWait, "the worker's spans of m-twice", func() bool {
		runSpans = col.find(func(s span) bool { return s.trace == p.trace && s.name == "process "+q })
		return len(runSpans) == 3
	})
	inTrace := col.find(func(s span) bool { return s.trace == p.trace })
	if len(inTrace) != 6 {
		t.Errorf("trace of m-twice has %d spans, want 6 (publish, 3 runs, 2 retry copies)\n%s", len(inTrace), col.dump())
	}
	byID := map[string]span{}
	for _, s := range inTrace {
		byID[s.id] = s
	}
	lines := runs(log, "m-twice")
	parent := p
	for attempt := 1; attempt <= 3; attempt++ {
		run := spanWith(t, runSpans, "warren.attempt", fmt.Sprint(attempt))
		if run.parent != parent.id || run.kind != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("run %d: parent %s kind %v, want parent %s (%s), consumer\n%s", attempt, run.parent, run.kind, parent.id, parent.name, col.dump())
		}
		wantAttrs(t, run, map[string]string{"messaging.system": "rabbitmq", "messaging.operation.type": "process",
			"messaging.message.id": "m-twice", "messaging.destination.subscription.name": q})
		// The exec handler got this run's span as its TRACEPARENT.
		if want := "00-" + p.trace + "-" + run.id + "-01"; lines[attempt-1] != fmt.Sprintf("m-twice %d %s", attempt, want) {
			t.Errorf("handler run %d saw %q, want TRACEPARENT %s", attempt, lines[attempt-1], want)
		}
		if attempt == 3 {
			wantAttrs(t, run, map[string]string{"warren.outcome": "ack"})
			break
		}
		wantAttrs(t, run, map[string]string{"warren.outcome": "retry"})
		copies := col.find(func(s span) bool { return s.parent == run.id })
		tier := retry.TierQueue(q, []time.Duration{tier1, tier2}[attempt-1])
		if len(copies) != 1 || copies[0].name != "publish "+tier || copies[0].kind != tracepb.Span_SPAN_KIND_PRODUCER {
			t.Fatalf("run %d: want one child span %q, got %v\n%s", attempt, "publish "+tier, copies, col.dump())
		}
		parent = copies[0]
	}

	// The dead letter: its publish is a child of the run that failed.
	dpub := col.find(func(s span) bool { return s.service == "publisher" && s.attrs["messaging.message.id"] == "m-doomed" })
	if len(dpub) != 1 {
		t.Fatalf("want one publish span of m-doomed\n%s", col.dump())
	}
	var dl []span
	waitFor(t, settleWait, "the dead letter's span", func() bool {
		dl = col.find(func(s span) bool { return s.trace == dpub[0].trace && s.name == "publish "+q+".dlq" })
		return len(dl) == 1
	})
	drun := col.find(func(s span) bool { return s.id == dl[0].parent })
	if len(drun) != 1 || drun[0].name != "process "+q || drun[0].parent != dpub[0].id {
		t.Fatalf("dead letter's span should be a child of m-doomed's run, itself a child of its publish\n%s", col.dump())
	}
	wantAttrs(t, drun[0], map[string]string{"warren.outcome": "dead_letter", "warren.error.kind": "permanent"})

	// The replay: a new trace linked to the dead letter's.
	if err := os.WriteFile(fixed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustWarren(t, col.env(e, "replayer"), "dlq", "replay", q)
	var rp []span
	waitFor(t, settleWait, "the replay's spans", func() bool {
		rp = col.find(func(s span) bool { return s.service == "replayer" && s.name == "replay "+q+".dlq" })
		return len(rp) == 1
	})
	r := rp[0]
	if r.parent != "" || r.trace == dpub[0].trace || len(r.links) != 1 || r.links[0] != dl[0].trace+"/"+dl[0].id {
		t.Fatalf("replay span: parent %q, trace %s, links %v; want a root of a new trace linked to %s/%s\n%s",
			r.parent, r.trace, r.links, dl[0].trace, dl[0].id, col.dump())
	}
	rpub := col.find(func(s span) bool { return s.parent == r.id && s.name == "publish "+q })
	if len(rpub) != 1 {
		t.Fatalf("want the replay's publish as its child\n%s", col.dump())
	}
	// The replayed message's run continues the replay's trace.
	w2 := startRun(t, col.env(e, "worker"), "-queue", q, "-exec", script)
	waitFor(t, settleWait, "the replayed run", func() bool { return len(runs(log, "m-doomed")) == 2 })
	w2.stop()
	waitFor(t, settleWait, "the replayed run's span", func() bool {
		return len(col.find(func(s span) bool { return s.parent == rpub[0].id && s.name == "process "+q })) == 1
	})
	if got := runs(log, "m-doomed")[1]; !strings.Contains(got, "-"+r.trace+"-") {
		t.Errorf("replayed run saw %q, want a TRACEPARENT in trace %s", got, r.trace)
	}
}

// runs are the log lines of message id's handler runs.
func runs(log lineLog, id string) []string {
	var out []string
	for _, l := range log.lines() {
		if strings.HasPrefix(l, id+" ") {
			out = append(out, l)
		}
	}
	return out
}

func queueDepth(t testing.TB, admin *testenv.Admin, queue string) int {
	t.Helper()
	return admin.TryCount(queue)
}

func spanWith(t *testing.T, spans []span, key, value string) span {
	t.Helper()
	for _, s := range spans {
		if s.attrs[key] == value {
			return s
		}
	}
	t.Fatalf("no span with %s=%s among %v", key, value, spans)
	return span{}
}

func wantAttrs(t *testing.T, s span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := s.attrs[k]; !ok || got != v {
			t.Errorf("span %q: %s = %q (present %v), want %q", s.name, k, got, ok, v)
		}
	}
}

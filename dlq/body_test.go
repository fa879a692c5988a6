package dlq_test

import (
	"runtime"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/worker"
)

// A JSON body is shown indented unless indenting could exceed twice the
// size bound; the bound is checked before indenting, so deep nesting (a
// 20 KB body indents to gigabytes) costs nothing.
func TestShowBodyIndentBound(t *testing.T) {
	s := dlq.ShowBody([]byte(`{"a":[1,2,{"b":"x,y[z]\"{"}]}`), "", 0)
	if s.Format != dlq.AsJSON || !strings.Contains(s.Text, "\n    2,\n") || !strings.Contains(s.Text, `"x,y[z]\"{"`) {
		t.Fatalf("small JSON: %+v", s)
	}
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s = dlq.ShowBody([]byte(deep), "", 0)
	runtime.ReadMemStats(&after)
	if s.Format != dlq.AsText || s.Text != deep || !strings.Contains(s.Note, "indented it would exceed") {
		t.Fatalf("deep JSON: format %s, note %q", s.Format, s.Note)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 10<<20 {
		t.Fatalf("showing 20 KB of deep JSON allocated %d MiB; it must not be indented", n>>20)
	}
}

// A replayed copy keeps the message's own headers and properties, and
// leaves out warren's failure headers and the broker's dead-lettering
// headers.
func TestFreshDropsFailureAndBrokerHeaders(t *testing.T) {
	d := &broker.Delivery{Message: broker.Message{MessageID: "m1", Body: []byte("b"), Headers: map[string]any{
		"tenant":                 "t1",
		worker.HeaderOriginalKey: "orders.created",
		"warren-error":           "boom",
		"warren-attempt":         int32(3),
		"x-death":                []any{amqp.Table{"count": int64(1), "queue": "q"}},
		"x-first-death-queue":    "q",
		"x-last-death-reason":    "rejected",
		"x-delivery-count":       int64(2),
		"x-custom-of-the-tenant": "kept",
	}}}
	m := dlq.Fresh(d)
	for _, k := range []string{"warren-error", "warren-attempt", worker.HeaderOriginalKey, "x-death", "x-first-death-queue", "x-last-death-reason", "x-delivery-count"} {
		if _, ok := m.Headers[k]; ok {
			t.Errorf("the replayed copy keeps header %s", k)
		}
	}
	for _, k := range []string{"tenant", "x-custom-of-the-tenant"} {
		if _, ok := m.Headers[k]; !ok {
			t.Errorf("the replayed copy lost header %s", k)
		}
	}
	if m.MessageID != "m1" || string(m.Body) != "b" {
		t.Errorf("the replayed copy changed: %+v", m)
	}
	if _, ok := d.Headers["x-death"]; !ok {
		t.Error("Fresh changed the letter's own headers")
	}
}

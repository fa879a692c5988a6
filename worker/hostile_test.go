package worker_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestHostileMessages sends real malformed messages and checks that each
// ends acked, retried or dead-lettered with a reason: never a crash, a hot
// redelivery loop or a stuck consumer. A normal message sent after them
// must still be processed.
func TestHostileMessages(t *testing.T) {
	t.Parallel()
	type order struct {
		ID string `json:"id"`
	}
	rec := newRecorder()
	cfg := retryConfig(t, broker.Quorum)
	f := newFixture(t, cfg, worker.Route{
		Exchange: ".x", BindingKeys: []string{"#"},
		Handler: worker.JSON(func(ctx context.Context, d *worker.Delivery, o order) error {
			rec.record(d)
			if o.ID == "" {
				return worker.Permanent(errors.New("order without id"))
			}
			return nil
		}),
	}).start()
	ex := f.queue + ".x"
	big := bytes.Repeat([]byte("x"), 16<<20)
	longKey := strings.Repeat("k", 255)
	msgs := []amqp.Publishing{
		{MessageId: "empty-body"},
		{MessageId: "big-body", Body: big},
		{MessageId: "garbage", Body: []byte{0xff, 0xfe, 0x00, 0x01}},
		{MessageId: "attempt-table", Body: []byte(`{"id":"a"}`), Headers: amqp.Table{retry.AttemptHeader: amqp.Table{"x": int32(1)}}},
		{MessageId: "original-key-wrong-type", Body: []byte(`{"id":"b"}`), Headers: amqp.Table{worker.HeaderOriginalKey: int32(7)}},
		{Body: []byte(`{"id":"no-message-id"}`)},
	}
	for _, m := range msgs {
		f.admin.Publish(ex, "order.created", m)
	}
	f.admin.Publish(ex, longKey, amqp.Publishing{MessageId: "long-key", Body: []byte(`{"id":"c"}`)})
	dlq := retry.DLQ(f.queue)
	// empty body, the 16 MiB body and the garbage do not decode; the
	// attempt header of the wrong type is invalid: four dead letters.
	if n := f.admin.WaitCount(dlq, 4, 30*time.Second); n != 4 {
		t.Fatalf("dlq holds %d, want 4", n)
	}
	// The handler ran for the three good ones only.
	got := rec.wait(t, 3, 20*time.Second)
	keys := map[string]string{}
	for _, c := range got {
		keys[c.id] = c.key
	}
	if keys["long-key"] != longKey {
		t.Errorf("255-byte routing key arrived as %q", keys["long-key"])
	}
	if keys["original-key-wrong-type"] != "order.created" {
		t.Errorf("a non-string original routing key header was trusted: %q", keys["original-key-wrong-type"])
	}
	f.publish("", broker.Message{MessageID: "after", Body: []byte(`{"id":"d"}`)})
	rec.wait(t, 1, 10*time.Second)
	rec.none(t, 500*time.Millisecond)
	f.mustStop()
	reasons := map[string]string{}
	var bigBody int
	for _, m := range f.admin.GetAll(dlq) {
		reasons[m.MessageId], _ = m.Headers[worker.HeaderDeadLetterReason].(string)
		if m.MessageId == "big-body" {
			bigBody = len(m.Body)
		}
	}
	want := map[string]string{"empty-body": worker.KindDecode, "big-body": worker.KindDecode, "garbage": worker.KindDecode, "attempt-table": worker.KindBadAttempt}
	for id, reason := range want {
		if reasons[id] != reason {
			t.Errorf("dead letter %s has reason %q, want %q", id, reasons[id], reason)
		}
	}
	if bigBody != len(big) {
		t.Errorf("16 MiB dead letter has %d bytes", bigBody)
	}
	if n := f.admin.Count(f.queue); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

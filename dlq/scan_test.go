package dlq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// fixture is a queue with its dead-letter queue, deleted at the end.
func fixture(t *testing.T) (*testenv.Admin, *broker.Conn, string) {
	t.Helper()
	admin := testenv.NewAdmin(t)
	q := testenv.Name(t)
	admin.DeleteQueues(q, retry.DLQ(q))
	admin.DeclareQueue(q)
	admin.DeclareQueue(retry.DLQ(q))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := broker.Dial(ctx, broker.Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return admin, conn, q
}

func letter(q, id, errText, kind, last string) amqp.Publishing {
	return amqp.Publishing{MessageId: id, Body: []byte(`{"id":"` + id + `"}`), ContentType: "application/json",
		Headers: amqp.Table{worker.HeaderError: errText, worker.HeaderErrorKind: kind, worker.HeaderLastFailure: last,
			worker.HeaderOriginalExchange: "", worker.HeaderOriginalKey: q, retry.AttemptHeader: int32(3), "tenant": "acme"}}
}

// TestScanGroupsFindReplay: a scan groups letters by queue, kind and
// fingerprint, takes nothing, filters by text and time; Find shows one
// letter and leaves it; a selection replay moves exactly the letters
// chosen, each acked after its copy is confirmed.
func TestScanGroupsFindReplay(t *testing.T) {
	t.Parallel()
	admin, conn, q := fixture(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		admin.Publish("", retry.DLQ(q), letter(q, fmt.Sprintf("t%d", i), fmt.Sprintf("db timeout after %ds", i), worker.KindTimeout, fmt.Sprintf("2026-01-0%dT00:00:00Z", i)))
	}
	admin.Publish("", retry.DLQ(q), letter(q, "p1", "invalid payload: no id", worker.KindPermanent, "2026-02-01T00:00:00Z"))
	ix, err := dlq.Scan(ctx, conn, []string{q, "missing-" + q}, dlq.ScanOptions{Window: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := admin.Count(retry.DLQ(q)); n != 6 || ix.Len() != 6 {
		t.Fatalf("after a scan: %d indexed, %d in the queue; want 6 and 6", ix.Len(), n)
	}
	if !ix.Queues[1].Missing || ix.Queues[0].Messages != 6 {
		t.Errorf("queue scans %+v", ix.Queues)
	}
	groups, total := ix.Groups(dlq.Filter{}, 0, 10)
	if total != 2 || groups[0].Count != 5 || groups[0].Fingerprint != "db timeout after <n>" || groups[0].Kind != worker.KindTimeout {
		t.Fatalf("groups %+v", groups)
	}
	if groups[0].First.Day() != 1 || groups[0].Last.Day() != 5 {
		t.Errorf("first/last seen %v %v", groups[0].First, groups[0].Last)
	}
	if g, n := ix.Groups(dlq.Filter{Text: "PAYLOAD"}, 0, 10); n != 1 || g[0].Count != 1 {
		t.Errorf("text filter: %+v", g)
	}
	since := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
	until := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	if g, n := ix.Groups(dlq.Filter{Since: since, Until: until}, 0, 10); n != 1 || g[0].Count != 3 {
		t.Errorf("time filter: %+v", g)
	}
	entries, n := ix.Entries(dlq.Filter{Group: groups[0].Key}, 1, 2)
	if n != 5 || len(entries) != 2 {
		t.Fatalf("entries page 2 of 2 per page: %d of %d", len(entries), n)
	}
	// A page number whose offset overflows an int is past the end.
	if far, n := ix.Entries(dlq.Filter{}, 184467440737095518, 50); len(far) != 0 || n != 6 {
		t.Fatalf("a page far past the end: %d entries of %d", len(far), n)
	}
	if far, n := ix.Groups(dlq.Filter{}, 184467440737095518, 50); len(far) != 0 || n != 2 {
		t.Fatalf("a page of groups far past the end: %d groups of %d", len(far), n)
	}

	l, err := dlq.Find(ctx, conn, q, entries[0].ID)
	if err != nil || l.MessageID != entries[0].MessageID || string(l.Body) == "" {
		t.Fatalf("find %s: %v %+v", entries[0].ID, err, l)
	}
	if _, err := dlq.Find(ctx, conn, q, dlq.ID(12345)); err == nil {
		t.Error("find of an unknown id succeeded")
	}
	if n := admin.Count(retry.DLQ(q)); n != 6 {
		t.Fatalf("after finds %d in the queue, want 6", n)
	}

	sel := dlq.Selection{entries[0].ID: 1, entries[1].ID: 1}
	pub := conn.NewPublisher()
	defer pub.Close()
	res, err := dlq.Replay(ctx, conn, pub, dlq.ReplayOptions{Queue: q, Match: sel.Match, Limit: sel.Len()})
	if err != nil || res.Replayed != 2 {
		t.Fatalf("replay of a selection: %+v %v", res, err)
	}
	if a, b := admin.Count(q), admin.Count(retry.DLQ(q)); a != 2 || b != 4 {
		t.Fatalf("after replaying 2: queue %d, DLQ %d; want 2 and 4", a, b)
	}
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		d, ok := admin.Get(q)
		if !ok {
			t.Fatal("replayed letter missing")
		}
		if _, has := d.Headers[worker.HeaderError]; has || d.Headers["tenant"] != "acme" {
			t.Errorf("replayed headers %v", d.Headers)
		}
		got[d.MessageId] = true
	}
	if !got[entries[0].MessageID] || !got[entries[1].MessageID] {
		t.Errorf("replayed %v, want %s and %s", got, entries[0].MessageID, entries[1].MessageID)
	}
}

// TestBrowseWindow: with a window of 3, a Browser reads 10 messages over
// several channels, Ack removes one, and Close returns the rest.
func TestBrowseWindow(t *testing.T) {
	t.Parallel()
	admin, conn, q := fixture(t)
	for i := 0; i < 10; i++ {
		admin.Publish("", q, amqp.Publishing{MessageId: fmt.Sprint(i)})
	}
	ctx := context.Background()
	b, err := conn.Browse(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		d, ok, err := b.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		seen[d.MessageID] = true
		if d.MessageID == "4" {
			if err := b.Ack(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(seen) != 10 || b.Read() != 10 {
		t.Errorf("read %d distinct of 10 (%d reads)", len(seen), b.Read())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := admin.WaitCount(q, 9, 10*time.Second); n != 9 {
		t.Errorf("after close %d messages, want 9", n)
	}
}

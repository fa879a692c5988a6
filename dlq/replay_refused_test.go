package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// A letter whose copy the broker refuses (its original routing key is
// bound nowhere) stays in the DLQ, is counted and named, and the replay
// goes on: every other letter of its batch is replayed and removed. A
// second replay moves nothing more and duplicates nothing (before, the
// letters of the batch after the refused one were published but left in
// the DLQ, and every replay published them again).
func TestReplayGoesOnPastARefusedLetter(t *testing.T) {
	t.Parallel()
	admin, conn, q := fixture(t)
	ex := q + ".ex"
	admin.DeleteExchanges(ex)
	ch := admin.Channel()
	if err := ch.ExchangeDeclare(ex, "direct", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, q, ex, false, nil); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := 0; i < n; i++ {
		l := letter(q, fmt.Sprintf("r%d", i), "downstream timeout", worker.KindTimeout, "2026-01-01T00:00:00Z")
		l.Headers[worker.HeaderOriginalExchange] = ex
		if i == 3 {
			l.Headers[worker.HeaderOriginalKey] = "bound-nowhere"
		}
		admin.Publish("", retry.DLQ(q), l)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for round := 1; round <= 2; round++ {
		res, err := dlq.Replay(ctx, conn, pub, dlq.ReplayOptions{Queue: q, OriginalRoute: true})
		var ue *broker.UnroutableError
		if !errors.As(err, &ue) {
			t.Fatalf("round %d: replay returned %v, want the refusal of r3 (unroutable)", round, err)
		}
		wantReplayed := n - 1
		if round == 2 {
			wantReplayed = 0
		}
		if res.Replayed != wantReplayed || res.Refused != 1 || res.NotRemoved != 0 {
			t.Fatalf("round %d: %+v; want %d replayed and 1 refused", round, res, wantReplayed)
		}
		if got, _ := testenv.WaitStable(10*time.Second, time.Second, func() int { return admin.Count(retry.DLQ(q)) }); got != 1 {
			t.Fatalf("round %d: the DLQ holds %d letters, want the refused one", round, got)
		}
		if got := admin.Count(q); got != n-1 {
			t.Fatalf("round %d: the queue holds %d copies, want %d (no duplicates)", round, got, n-1)
		}
	}
	if d, ok := admin.Get(retry.DLQ(q)); !ok || d.MessageId != "r3" {
		t.Fatalf("the letter left in the DLQ is %q, want r3", d.MessageId)
	}
}

// A replay that could read only some of the letters the DLQ held (another
// reader holds the rest unacked) says so instead of reporting success.
func TestReplayReportsLettersItCouldNotRead(t *testing.T) {
	t.Parallel()
	admin, conn, q := fixture(t)
	for i := 0; i < 3; i++ {
		admin.Publish("", retry.DLQ(q), letter(q, fmt.Sprintf("h%d", i), "boom", worker.KindError, "2026-01-01T00:00:00Z"))
	}
	// Another reader takes all three and holds them unacked.
	ch := admin.Channel()
	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	held, err := ch.Consume(retry.DLQ(q), "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		select {
		case <-held:
		case <-time.After(20 * time.Second):
			t.Fatal("the other reader got no letter")
		}
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	res, err := dlq.Replay(context.Background(), conn, pub, dlq.ReplayOptions{Queue: q})
	if err == nil || !strings.Contains(err.Error(), "1 other reader(s)") || res.Replayed != 0 {
		t.Fatalf("with every letter held by another reader: %+v, %v; want an error that says so", res, err)
	}
}

// An interrupted replay stops after the batch on the wire: that batch is
// replayed and removed whole, and every later letter stays in the DLQ.
func TestReplayStopsWhenInterrupted(t *testing.T) {
	t.Parallel()
	admin, conn, q := fixture(t)
	const n = 300
	letters := make([]amqp.Publishing, n)
	for i := range letters {
		letters[i] = letter(q, fmt.Sprintf("i%d", i), "boom", worker.KindError, "2026-01-01T00:00:00Z")
	}
	admin.PublishBatch("", retry.DLQ(q), letters)
	pub := conn.NewPublisher()
	defer pub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := dlq.Replay(ctx, conn, pub, dlq.ReplayOptions{Queue: q, Progress: func(dlq.ReplayResult) { cancel() }})
	if !errors.Is(err, context.Canceled) || res.Replayed == 0 || res.Replayed >= n {
		t.Fatalf("interrupted after the first batch: %+v, %v; want some replayed, not all, and the interruption", res, err)
	}
	if got, _ := testenv.WaitStable(10*time.Second, time.Second, func() int { return admin.Count(retry.DLQ(q)) }); got != n-res.Replayed {
		t.Fatalf("the DLQ holds %d letters after %d of %d were replayed", got, res.Replayed, n)
	}
	if got := admin.Count(q); got != res.Replayed {
		t.Fatalf("the queue holds %d copies, want %d", got, res.Replayed)
	}
}

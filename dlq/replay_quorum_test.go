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
)

// A replay of a quorum DLQ removes every letter it replayed: its acks go
// out in bursts (one per letter of a confirmed batch), and the broker's
// quorum-queue client drops settlements it held back when the channel
// closes, which left replayed letters in the DLQ to be replayed twice.
func TestReplayQuorumDLQRemovesEveryLetter(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := testenv.Name(t)
	admin.DeleteQueues(q, retry.DLQ(q))
	conn, err := broker.Dial(context.Background(), broker.Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	top := broker.Topology{Queues: []broker.Queue{{Name: q, Type: broker.Quorum}, {Name: retry.DLQ(q), Type: broker.Quorum}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := conn.Declare(ctx, top); err != nil {
		t.Fatal(err)
	}
	const n = 300
	letters := make([]amqp.Publishing, n)
	for i := range letters {
		letters[i] = letter(q, fmt.Sprintf("m%d", i), "downstream timeout", "timeout", "2026-01-01T00:00:00Z")
	}
	admin.PublishBatch("", retry.DLQ(q), letters)
	pub := conn.NewPublisher()
	defer pub.Close()
	res, err := dlq.Replay(ctx, conn, pub, dlq.ReplayOptions{Queue: q})
	if err != nil || res.Replayed != n {
		t.Fatalf("replay: %+v %v", res, err)
	}
	// A letter the broker did not count as acked comes back to the DLQ
	// once it has handled the close of the channel that read it.
	if got, _ := testenv.WaitStable(10*time.Second, time.Second, func() int { return admin.Count(retry.DLQ(q)) }); got != 0 {
		t.Fatalf("the DLQ holds %d letters after all %d were replayed, want 0", got, n)
	}
	if got := admin.Count(q); got != n {
		t.Fatalf("the queue holds %d replayed letters, want %d", got, n)
	}
}

package compat_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
)

// deathCount returns the count of the x-death entry for queue and reason,
// 0 when there is none.
func deathCount(h amqp.Table, queue, reason string) int64 {
	deaths, _ := h["x-death"].([]any)
	for _, d := range deaths {
		e, _ := d.(amqp.Table)
		if e["queue"] == queue && e["reason"] == reason {
			n, _ := e["count"].(int64)
			return n
		}
	}
	return 0
}

// TestXDeathOnRepublish shows what changed: a message that expired in a
// queue carries x-death; republished by a client with that header and
// expired again, RabbitMQ 3.10 raises the count to 2, RabbitMQ 4 (3.13 and
// later) keeps its own record and ignores the client's copy, so the count
// is 1 again. Any retry count kept in x-death stops at 1 on 4.x.
func TestXDeathOnRepublish(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	hold := q + ".hold"
	a.DeleteQueues(q, hold)
	ch := a.Channel()
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(hold, true, false, false, false, amqp.Table{
		"x-message-ttl": int64(20), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q,
	}); err != nil {
		t.Fatal(err)
	}
	a.Publish("", hold, amqp.Publishing{MessageId: "m", Body: []byte("b")})
	first := getWithin(t, a, q, 20*time.Second)
	if n := deathCount(first.Headers, hold, "expired"); n != 1 {
		t.Fatalf("after one expiry x-death count = %d, want 1 (headers %v)", n, first.Headers)
	}
	// A client's republish, keeping every header.
	a.Publish("", hold, amqp.Publishing{MessageId: "m", Body: first.Body, Headers: first.Headers})
	second := getWithin(t, a, q, 20*time.Second)
	got := deathCount(second.Headers, hold, "expired")
	want := int64(2)
	if a.AtLeast(3, 13) {
		want = 1
	}
	if got != want {
		t.Fatalf("RabbitMQ %s: after a republish and a second expiry x-death count = %d, want %d (headers %v)",
			a.Version(), got, want, second.Headers)
	}
}

func getWithin(t *testing.T, a *testenv.Admin, q string, within time.Duration) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if d, ok := a.Get(q); ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing arrived in %s within %s", q, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

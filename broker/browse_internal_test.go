package broker

import (
	"bytes"
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/internal/testenv"
)

// A Browser that picks its own window cuts it to the bytes it lets wait
// in memory, from the size of the messages read so far; a window the
// caller chose stays.
func TestBrowseWindowFollowsMessageSize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	a.DeleteQueues(q)
	a.DeclareQueue(q)
	t.Cleanup(func() { a.DeleteQueues(q) })
	const n, size = 200, 16 << 10
	ps := make([]amqp.Publishing, n)
	for i := range ps {
		ps[i] = amqp.Publishing{Body: bytes.Repeat([]byte{'x'}, size)}
	}
	a.PublishBatch("", q, ps)
	if got := a.WaitCount(q, n, 10*time.Second); got != n {
		t.Fatalf("queue holds %d, want %d", got, n)
	}
	conn, err := Dial(ctx, Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	saved := browseBytes
	browseBytes = 10 * size // a window of 10 messages of this size
	t.Cleanup(func() { browseBytes = saved })
	for _, c := range []struct {
		name    string
		window  int
		windows func(i int) int // of the i-th channel
	}{
		{"chosen by the Browser", 0, func(i int) int {
			if i == 0 {
				return browseProbe
			}
			return 10
		}},
		{"chosen by the caller", 50, func(int) int { return 50 }},
	} {
		b, err := conn.Browse(ctx, q, c.window)
		if err != nil {
			t.Fatal(err)
		}
		read := 0
		for {
			_, ok, err := b.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			read++
		}
		for i, ch := range b.chans {
			if ch.window != c.windows(i) {
				t.Errorf("%s: channel %d has a window of %d, want %d", c.name, i, ch.window, c.windows(i))
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if read != n {
			t.Fatalf("%s: read %d, want %d", c.name, read, n)
		}
	}
	if got := a.WaitCount(q, n, 10*time.Second); got != n {
		t.Fatalf("after browsing the queue holds %d, want %d", got, n)
	}
}

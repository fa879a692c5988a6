package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestPublishTooLarge: RabbitMQ 4 refuses bodies over 16 MiB by default
// (3.x: 128 MiB, too much for a test). The publisher returns an error that
// names the size and the limit; the publishes that shared the channel with
// the refused one are stored all the same; a second oversized body fails at
// once, without closing the channel; the publisher goes on working.
func TestPublishTooLarge(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	if !a.AtLeast(4, 0) {
		t.Skipf("RabbitMQ %s refuses bodies over 128 MiB only; the 16 MiB limit came with 4.0", a.Version())
	}
	const limit = 16 << 20
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	big := bytes.Repeat([]byte("x"), limit+1)

	const small = 50
	var wg sync.WaitGroup
	smallErrs := make([]error, small)
	for i := range small {
		wg.Add(1)
		go func() {
			defer wg.Done()
			smallErrs[i] = pub.Publish(ctxT(t, 60*time.Second), ex, "k", broker.Message{MessageID: fmt.Sprint("small-", i), Body: []byte("s")})
		}()
	}
	err := pub.Publish(ctxT(t, 60*time.Second), ex, "k", broker.Message{MessageID: "big", Body: big})
	wg.Wait()
	var tl *broker.MessageTooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("publishing %d bytes: got %v, want a *MessageTooLargeError", len(big), err)
	}
	if tl.Size != limit+1 || tl.Limit != limit || tl.MessageID != "big" {
		t.Errorf("error names size %d, limit %d, id %q; want %d, %d, big", tl.Size, tl.Limit, tl.MessageID, limit+1, limit)
	}
	for _, want := range []string{"16777217 bytes", "max_message_size is 16777216 bytes", `"big"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	var ce *broker.ChannelError
	if !errors.As(err, &ce) {
		t.Errorf("error %v does not unwrap to the broker's *ChannelError", err)
	}
	for i, err := range smallErrs {
		if err != nil {
			t.Errorf("small publish %d beside the oversized one: %v", i, err)
		}
	}

	// Known now: refused at once, nothing sent.
	start := c.Reconnects()
	err = pub.Publish(ctxT(t, 60*time.Second), ex, "k", broker.Message{MessageID: "big-2", Body: big})
	if !errors.As(err, &tl) || tl.MessageID != "big-2" || tl.Limit != limit {
		t.Fatalf("second oversized publish: got %v, want a *MessageTooLargeError for big-2", err)
	}
	errs := pub.PublishBatch(ctxT(t, 60*time.Second), []broker.Outgoing{
		{Exchange: ex, RoutingKey: "k", Message: broker.Message{MessageID: "batch-big", Body: big}},
		{Exchange: ex, RoutingKey: "k", Message: broker.Message{MessageID: "batch-small", Body: []byte("s")}},
	})
	if !errors.As(errs[0], &tl) || tl.MessageID != "batch-big" {
		t.Errorf("oversized message of a batch: got %v, want a *MessageTooLargeError", errs[0])
	}
	if errs[1] != nil {
		t.Errorf("small message of a batch beside an oversized one: %v", errs[1])
	}
	if err := pub.Publish(ctxT(t, 20*time.Second), ex, "k", broker.Message{MessageID: "after", Body: []byte("a")}); err != nil {
		t.Fatalf("publish after the refusals: %v", err)
	}
	if c.Reconnects() != start {
		t.Error("a size refusal cost the connection")
	}
	// Every small message is in the queue (some maybe twice: those in
	// flight on the refused channel were published again); no big one.
	ids := map[string]int{}
	for _, d := range a.GetAll(q) {
		ids[d.MessageId]++
		if len(d.Body) > limit {
			t.Errorf("message %q of %d bytes was stored", d.MessageId, len(d.Body))
		}
	}
	for i := range small {
		if ids[fmt.Sprint("small-", i)] == 0 {
			t.Errorf("small-%d is not in the queue", i)
		}
	}
	if ids["batch-small"] != 1 || ids["after"] != 1 {
		t.Errorf("batch-small stored %d times, after %d times; want 1 each", ids["batch-small"], ids["after"])
	}
}

package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/internal/testenv"
)

// TestExpiredPublishKeepsTheChannel: a publish whose own deadline has
// passed fails alone; the channel, and the other publishes on it, stay.
func TestExpiredPublishKeepsTheChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pub := c.NewPublisher()
	defer pub.Close()
	if err := pub.Publish(ctx, "amq.direct", "nobody", Message{}); err == nil {
		t.Fatal("unroutable publish succeeded")
	}
	before := pub.liveSession()
	expired, cancelExpired := context.WithTimeout(ctx, -time.Second)
	defer cancelExpired()
	if err := pub.Publish(expired, "amq.direct", "nobody", Message{}); err == nil {
		t.Fatal("publish with an expired context succeeded")
	}
	if after := pub.liveSession(); after != before || after == nil {
		t.Fatal("an expired publish closed the shared publisher channel")
	}
}

// TestAloneSlotAfterAnAbandonedPublish: a publish alone whose caller
// stopped waiting may still close its channel; the next message on that
// slot must not be blamed for it. One slot here, so the next message
// surely takes the same one.
func TestAloneSlotAfterAnAbandonedPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Dial(ctx, Config{URL: testenv.AMQPURL(), Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pub := c.NewPublisher()
	defer pub.Close()
	for range aloneSlots - 1 {
		<-pub.alone
	}
	missing := testenv.Name(t) + ".missing"
	blamed := 0
	for i := range 100 {
		bm := Message{MessageID: "bad"}
		bad := bm.publishing()
		bctx, bcancel := context.WithCancel(ctx)
		// Give up at once or a little later, around the time the
		// broker's channel.close comes back.
		stop := time.AfterFunc(time.Duration(i%20)*20*time.Microsecond, bcancel)
		if err := pub.publishAlone(bctx, missing, "k", &bad, 0); err == nil {
			t.Fatal("a publish to a missing exchange succeeded")
		}
		stop.Stop()
		bcancel()
		gm := Message{MessageID: "good"}
		good := gm.publishing()
		if err := pub.publishAlone(ctx, "amq.direct", "nobody", &good, 0); err != nil {
			var ue *UnroutableError
			if !errors.As(err, &ue) {
				blamed++
				t.Logf("round %d: %v", i, err)
			}
		}
	}
	if blamed > 0 {
		t.Fatalf("%d of 100 messages were blamed for the message before them", blamed)
	}
}

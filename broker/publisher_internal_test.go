package broker

import (
	"context"
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

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

func dial(t *testing.T, url string) *broker.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, broker.Config{URL: url, Logger: zaptest.NewLogger(t), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// simpleTopology declares an exchange and a queue bound with key "k".
func simpleTopology(t *testing.T, a *testenv.Admin, qt broker.QueueType) (broker.Topology, string, string) {
	name := testenv.Name(t)
	a.DeleteQueues(name)
	a.DeleteExchanges(name + ".x")
	return broker.Topology{
		Exchanges: []broker.Exchange{{Name: name + ".x"}},
		Queues:    []broker.Queue{{Name: name, Type: qt}},
		Bindings:  []broker.Binding{{Exchange: name + ".x", Queue: name, RoutingKey: "k"}},
	}, name + ".x", name
}

// declareSimple declares simpleTopology on c and returns its exchange
// and queue.
func declareSimple(t *testing.T, a *testenv.Admin, c *broker.Conn, qt broker.QueueType) (exchange, queue string) {
	t.Helper()
	top, ex, q := simpleTopology(t, a, qt)
	if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
		t.Fatal(err)
	}
	return ex, q
}

func TestDeclareIsIdempotent(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	top, _, q := simpleTopology(t, a, broker.Quorum)
	for i := 0; i < 3; i++ {
		if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
			t.Fatalf("declare %d: %v", i, err)
		}
	}
	if n := a.Count(q); n != 0 {
		t.Fatalf("fresh queue has %d messages", n)
	}
}

func TestDeclareDriftNamesQueueAndArgument(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	name := testenv.Name(t)
	a.DeleteQueues(name)
	first := broker.Topology{Queues: []broker.Queue{{Name: name, Args: map[string]any{"x-message-ttl": int32(1000)}}}}
	if err := c.Declare(ctxT(t, 10*time.Second), first); err != nil {
		t.Fatal(err)
	}
	second := broker.Topology{Queues: []broker.Queue{{Name: name, Args: map[string]any{"x-message-ttl": int32(2000)}}}}
	err := c.Declare(ctxT(t, 10*time.Second), second)
	var drift *broker.DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("want a DriftError, got %v", err)
	}
	if drift.Name != name || drift.Argument != "x-message-ttl" {
		t.Fatalf("drift names %q/%q, want %q/x-message-ttl: %v", drift.Name, drift.Argument, name, err)
	}
	// The connection survives the failed declare.
	if err := c.Declare(ctxT(t, 10*time.Second), first); err != nil {
		t.Fatalf("declare after drift: %v", err)
	}
}

func TestPublishConsumeAck(t *testing.T) {
	t.Parallel()
	for _, qt := range []broker.QueueType{broker.Classic, broker.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			a := testenv.NewAdmin(t)
			c := dial(t, testenv.AMQPURL())
			ex, q := declareSimple(t, a, c, qt)
			pub := c.NewPublisher()
			defer pub.Close()
			const n = 200
			for i := 0; i < n; i++ {
				err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{Body: []byte(fmt.Sprint(i)), Headers: map[string]any{"i": int32(i)}})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			cons, err := c.Consume(broker.ConsumerConfig{Queue: q, Prefetch: 50})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			timeout := time.After(20 * time.Second)
			for len(seen) < n {
				select {
				case d := <-cons.Deliveries():
					if d.MessageID == "" {
						t.Fatal("publisher did not set a message id")
					}
					if d.Transient {
						t.Fatal("message not persistent by default")
					}
					seen[string(d.Body)] = true
					if err := d.Ack(); err != nil {
						t.Fatal(err)
					}
				case <-timeout:
					t.Fatalf("got %d of %d", len(seen), n)
				}
			}
			cons.Stop()
			if err := cons.Close(); err != nil {
				t.Fatal(err)
			}
			if got := a.WaitCount(q, 0, 5*time.Second); got != 0 {
				t.Fatalf("%d messages left after acking all", got)
			}
		})
	}
}

func TestPublishUnroutable(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	top, ex, _ := simpleTopology(t, a, broker.Classic)
	if err := c.Declare(ctxT(t, 10*time.Second), top); err != nil {
		t.Fatal(err)
	}
	pub := c.NewPublisher()
	defer pub.Close()
	err := pub.Publish(ctxT(t, 10*time.Second), ex, "nobody-listens", broker.Message{MessageID: "m1"})
	var un *broker.UnroutableError
	if !errors.As(err, &un) {
		t.Fatalf("want UnroutableError, got %v", err)
	}
	if un.MessageID != "m1" || un.RoutingKey != "nobody-listens" {
		t.Fatalf("wrong return: %+v", un)
	}
	// A routable message right after still succeeds.
	if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{MessageID: "m1"}); err != nil {
		t.Fatalf("routable publish: %v", err)
	}
}

func TestPublishMissingExchange(t *testing.T) {
	t.Parallel()
	c := dial(t, testenv.AMQPURL())
	pub := c.NewPublisher()
	defer pub.Close()
	err := pub.Publish(ctxT(t, 10*time.Second), testenv.Name(t), "k", broker.Message{})
	var ce *broker.ChannelError
	if !errors.As(err, &ce) {
		t.Fatalf("want ChannelError for a missing exchange, got %v", err)
	}
	if err := pub.Publish(ctxT(t, 10*time.Second), "", "amq.missing-queue-"+testenv.Name(t), broker.Message{}); err == nil {
		t.Fatal("publish to nowhere succeeded")
	}
}

func TestConcurrentPublishers(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Classic)
	pub := c.NewPublisher()
	defer pub.Close()
	const workers, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := pub.Publish(ctxT(t, 20*time.Second), ex, "k", broker.Message{Body: []byte("x")}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	if got := a.WaitCount(q, workers*each, 5*time.Second); got != workers*each {
		t.Fatalf("queue holds %d, want %d", got, workers*each)
	}
}

func TestPublishHonoursDeadlineWhileDisconnected(t *testing.T) {
	t.Parallel()
	proxy, url := testenv.AMQPProxy(t)
	c := dial(t, url)
	pub := c.NewPublisher()
	defer pub.Close()
	proxy.Refuse(true)
	waitFor(t, func() bool { return !c.Connected() })
	start := time.Now()
	err := pub.Publish(ctxT(t, 300*time.Millisecond), "", "whatever", broker.Message{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded while disconnected, got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("publish ignored its deadline")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPublishBatch(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	var batch []broker.Outgoing
	for i := 0; i < 300; i++ {
		key, exchange := "k", ex
		switch i {
		case 17:
			key = "nowhere"
		case 40, 41, 150: // each closes the channel under the batch
			exchange = testenv.Name(t) + ".missing"
		}
		batch = append(batch, broker.Outgoing{Exchange: exchange, RoutingKey: key, Message: broker.Message{Body: []byte(fmt.Sprint(i))}})
	}
	errs := pub.PublishBatch(ctxT(t, 20*time.Second), batch)
	for i, err := range errs {
		var (
			un *broker.UnroutableError
			ce *broker.ChannelError
		)
		switch i {
		case 17:
			if !errors.As(err, &un) {
				t.Fatalf("message 17: %v, want unroutable", err)
			}
		case 40, 41, 150:
			if !errors.As(err, &ce) {
				t.Fatalf("message %d: %v, want a channel error", i, err)
			}
		default:
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
	}
	// Messages behind a channel error were published again; one whose
	// confirm the error cut off may be stored twice.
	if got := a.Count(q); got < 296 {
		t.Fatalf("queue holds %d, want at least 296", got)
	}
}

// A message that kills the publisher's channel every time (here: its
// exchange does not exist) fails alone. The others in flight on that
// channel are published again and confirmed, however often it strikes.
func TestChannelErrorBlamesOnlyItsCause(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	c := dial(t, testenv.AMQPURL())
	ex, q := declareSimple(t, a, c, broker.Classic)
	pub := c.NewPublisher()
	defer pub.Close()
	missing := testenv.Name(t) + ".missing"
	const good, goodEach, bad, badEach = 8, 100, 4, 40
	var wg sync.WaitGroup
	errs := make(chan error, good*goodEach+bad*badEach)
	for w := 0; w < good; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < goodEach; i++ {
				if err := pub.Publish(ctxT(t, 60*time.Second), ex, "k", broker.Message{Body: []byte("x")}); err != nil {
					errs <- fmt.Errorf("publish to %s: %w", ex, err)
				}
			}
		}()
	}
	for w := 0; w < bad; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < badEach; i++ {
				var ce *broker.ChannelError
				if err := pub.Publish(ctxT(t, 60*time.Second), missing, "k", broker.Message{}); !errors.As(err, &ce) {
					errs <- fmt.Errorf("publish to the missing exchange: want a ChannelError, got %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Fatalf("%d publishes failed", n)
	}
	// Confirmed messages are stored; one whose channel died before its
	// confirm may be stored twice.
	if got := a.Count(q); got < good*goodEach {
		t.Fatalf("queue holds %d, want at least %d", got, good*goodEach)
	}
}

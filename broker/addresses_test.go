package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

func TestParseURLs(t *testing.T) {
	t.Parallel()
	good := map[string]int{
		"amqp://u:secret@h1:5672/v": 1,
		"amqp://u:secret@h1:5681/v,amqp://u:secret@h2:5682/v,amqp://u:secret@h3:5683/v": 3,
		"amqps://u:se,cret@h1/,amqps://u:se,cret@h2/":                                   2,
		"amqp://u:a,b@h1/": 1,
	}
	for raw, n := range good {
		got, err := broker.ParseURLs(raw)
		if err != nil || len(got) != n {
			t.Errorf("ParseURLs(%q) = %d addresses, %v; want %d", raw, len(got), err, n)
		}
	}
	bad := map[string]string{
		"":                      "must not be empty",
		"amqp://u:secret@h1/v,": "address 2 of 2: is empty",
		"amqp://u:secret@h1/v,http://u:secret@h2/v":  "address 2 of 2: scheme",
		"amqp://u:secret@h1/v,amqp:///v":             "has no host",
		"amqp://u:secret@h1/v,amqp://u:other@h2/v":   "address 2 of 2",
		"amqp://u:secret@h1/v,amqp://u:secret@h2/w":  "differs from address 1",
		"amqp://u:secret@h1/v,amqps://u:secret@h2/v": "differs from address 1",
		"amqp://u:secret@h1/v,amqp://x:secret@h2/v":  "same credentials",
	}
	for raw, want := range bad {
		_, err := broker.ParseURLs(raw)
		if err == nil {
			t.Errorf("ParseURLs(%q) = nil error, want one with %q", raw, want)
			continue
		}
		if want == "same credentials" {
			want = "differ only in host and port"
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURLs(%q) = %q, want it to say %q", raw, err, want)
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "other") {
			t.Errorf("ParseURLs(%q) error shows a password: %q", raw, err)
		}
	}
}

// TestDialTriesAddressesInTurn gives Dial a list whose first address
// refuses connections: it connects to the second.
func TestDialTriesAddressesInTurn(t *testing.T) {
	t.Parallel()
	down, downURL := testenv.AMQPProxy(t)
	down.Refuse(true)
	_, upURL := testenv.AMQPProxy(t)
	c := dial(t, downURL+","+upURL)
	if got, want := c.Address(), upURL; !strings.Contains(want, strings.TrimPrefix(got, "amqp://guest:xxxxx@")) || got == "" {
		t.Fatalf("connected to %q, want the second address %q", got, upURL)
	}
	if strings.Contains(c.Address(), ":guest@") {
		t.Fatalf("Address shows the password: %q", c.Address())
	}
}

// TestReconnectMovesToSurvivor connects through the first of two
// addresses, then makes it refuse: the connection comes back on the
// second, and publishing goes on.
func TestReconnectMovesToSurvivor(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	first, firstURL := testenv.AMQPProxy(t)
	second, secondURL := testenv.AMQPProxy(t)
	c := dial(t, firstURL+","+secondURL)
	if !strings.HasSuffix(c.Address(), first.Addr()+"/") {
		t.Fatalf("connected to %q, want the first address %s", c.Address(), first.Addr())
	}
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	if err := pub.Publish(ctxT(t, 10*time.Second), ex, "k", broker.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	first.Refuse(true)
	if err := pub.Publish(ctxT(t, 30*time.Second), ex, "k", broker.Message{Body: []byte("after")}); err != nil {
		t.Fatalf("publish after losing the first address: %v", err)
	}
	if !strings.HasSuffix(c.Address(), second.Addr()+"/") {
		t.Fatalf("connected to %q after the loss, want the second address %s", c.Address(), second.Addr())
	}
	if n := a.WaitCount(q, 2, 10*time.Second); n != 2 {
		t.Fatalf("queue holds %d messages, want 2", n)
	}
}

// TestPeersReconnectTogether: two Conns to the same address whose backoff
// is long (10s to 20s) wait it out after the broker went away; a third Conn
// to the same address with a short backoff finds the broker back first,
// and the two others follow at once instead of at the end of their
// backoff.
func TestPeersReconnectTogether(t *testing.T) {
	t.Parallel()
	proxy, url := testenv.AMQPProxy(t)
	slow := make([]*broker.Conn, 2)
	logs := make([]*observer.ObservedLogs, 2)
	for i := range slow {
		core, obs := observer.New(zapcore.InfoLevel)
		logs[i] = obs
		log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
		c, err := broker.Dial(ctxT(t, 20*time.Second), broker.Config{URL: url, Logger: log,
			MinBackoff: 20 * time.Second, MaxBackoff: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		slow[i] = c
	}
	fast := dial(t, url)
	proxy.Refuse(true)
	// Both slow Conns failed a round and now wait 10s to 20s.
	for i := range slow {
		waitFor(t, func() bool { return logs[i].FilterMessage("connect failed").Len() > 0 })
	}
	proxy.Refuse(false)
	waitFor(t, fast.Connected)
	back := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	for i, c := range slow {
		for !c.Connected() {
			if ctx.Err() != nil {
				t.Fatalf("conn %d still down %s after its peer reconnected: it waited out its backoff", i, time.Since(back))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("both slow conns back %s after the fast one", time.Since(back))
}

package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// Short tiers for the retry tests.
const (
	tier1 = 200 * time.Millisecond
	tier2 = 400 * time.Millisecond
	// quiet is how long "nothing more happens" is watched: longer than the
	// largest tier, so a stray retry copy would have come back.
	quiet = 700 * time.Millisecond
)

var queueTypes = []broker.QueueType{broker.Classic, broker.Quorum}

// retryConfig is testConfig with the tiers above, 3 attempts and qt.
func retryConfig(t *testing.T, qt broker.QueueType) worker.Config {
	cfg := testConfig(t)
	cfg.RetryDelays = []time.Duration{tier1, tier2}
	cfg.MaxAttempts = 3
	cfg.QueueType = qt
	return cfg
}

// q returns the full name of the route queue with suffix.
func (f *fixture) q(suffix string) string { return f.queue + suffix }

// tiers returns the tier queue names of queue for delays.
func tiers(queue string, delays ...time.Duration) []string {
	out := make([]string, len(delays))
	for i, d := range delays {
		out[i] = retry.TierQueue(queue, d)
	}
	return out
}

// expectCounts fails unless each queue holds want ready messages.
func (f *fixture) expectCounts(want int, queues ...string) {
	f.t.Helper()
	for _, q := range queues {
		if n := f.admin.Count(q); n != want {
			f.t.Errorf("queue %s holds %d ready messages, want %d", q, n, want)
		}
	}
}

// mustStop stops the worker and fails on a Run error.
func (f *fixture) mustStop() {
	f.t.Helper()
	if err := f.stop(); err != nil {
		f.t.Fatalf("run: %v", err)
	}
}

// header returns h[k] as a string, failing when it is missing or not one.
func header(t *testing.T, h amqp.Table, k string) string {
	t.Helper()
	v, ok := h[k]
	if !ok {
		t.Errorf("header %s missing (headers: %v)", k, h)
		return ""
	}
	s, ok := v.(string)
	if !ok {
		t.Errorf("header %s is %T %v, want a string", k, v, v)
	}
	return s
}

// intHeader returns h[k] as an int, failing when it is missing or not an
// integer.
func intHeader(t *testing.T, h amqp.Table, k string) int {
	t.Helper()
	switch v := h[k].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int16:
		return int(v)
	case int8:
		return int(v)
	case int:
		return v
	default:
		t.Errorf("header %s is %T %v, want an integer", k, h[k], h[k])
		return 0
	}
}

// failing returns a handler that records every call and returns err.
func failing(rec *recorder, err error) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		return err
	})
}

// checkDeadLetter checks the failure headers every dead letter carries.
func checkDeadLetter(t *testing.T, m amqp.Delivery, queue, handler, reason, kind string, attempts int, errText string) {
	t.Helper()
	h := m.Headers
	if got := header(t, h, worker.HeaderDeadLetterReason); got != reason {
		t.Errorf("%s = %q, want %q", worker.HeaderDeadLetterReason, got, reason)
	}
	if got := header(t, h, worker.HeaderErrorKind); got != kind {
		t.Errorf("%s = %q, want %q", worker.HeaderErrorKind, got, kind)
	}
	if got := header(t, h, worker.HeaderError); !strings.Contains(got, errText) {
		t.Errorf("%s = %q, want it to contain %q", worker.HeaderError, got, errText)
	}
	if got := header(t, h, worker.HeaderQueue); got != queue {
		t.Errorf("%s = %q, want %q", worker.HeaderQueue, got, queue)
	}
	if got := header(t, h, worker.HeaderHandler); got != handler {
		t.Errorf("%s = %q, want %q", worker.HeaderHandler, got, handler)
	}
	if got := intHeader(t, h, worker.HeaderAttempts); got != attempts {
		t.Errorf("%s = %d, want %d", worker.HeaderAttempts, got, attempts)
	}
	host, _ := os.Hostname()
	if got := header(t, h, worker.HeaderHost); got != host {
		t.Errorf("%s = %q, want %q", worker.HeaderHost, got, host)
	}
	first, err1 := time.Parse(time.RFC3339Nano, header(t, h, worker.HeaderFirstFailure))
	last, err2 := time.Parse(time.RFC3339Nano, header(t, h, worker.HeaderLastFailure))
	if err1 != nil || err2 != nil {
		t.Errorf("failure times are not RFC3339Nano: %v, %v", err1, err2)
	} else if last.Before(first) {
		t.Errorf("last failure %s before first failure %s", last, first)
	}
	// x-delivery-count is not checked: a quorum DLQ adds its own (0) when
	// the test reads the dead letter.
	for _, k := range []string{"x-death", "x-first-death-queue", "x-last-death-queue"} {
		if _, ok := h[k]; ok {
			t.Errorf("dead letter still carries the broker header %s = %v", k, h[k])
		}
	}
}

// TestRetryFailsTwiceThenSucceeds: attempts 1, 2, 3 with the tier delays
// between them, then an ack and nothing left anywhere.
func TestRetryFailsTwiceThenSucceeds(t *testing.T) {
	t.Parallel()
	for _, qt := range queueTypes {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			var calls atomic.Int32
			f := newFixture(t, retryConfig(t, qt), worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
				rec.record(d)
				if calls.Add(1) <= 2 {
					return errors.New("not yet")
				}
				return nil
			})}).start()
			f.publish("", broker.Message{Body: []byte("twice"), MessageID: "m-twice"})
			got := rec.wait(t, 3, 15*time.Second)
			rec.none(t, quiet)
			for i, c := range got {
				if c.attempt != i+1 {
					t.Errorf("call %d has attempt %d, want %d", i+1, c.attempt, i+1)
				}
				if c.id != "m-twice" || c.body != "twice" {
					t.Errorf("call %d saw id %q body %q", i+1, c.id, c.body)
				}
			}
			if gap := got[1].at.Sub(got[0].at); !tierPassed(gap, tier1) {
				t.Errorf("gap before attempt 2 is %s, want >= %s", gap, tier1)
			}
			if gap := got[2].at.Sub(got[1].at); !tierPassed(gap, tier2) {
				t.Errorf("gap before attempt 3 is %s, want >= %s", gap, tier2)
			}
			t.Logf("gaps: %s, %s", got[1].at.Sub(got[0].at), got[2].at.Sub(got[1].at))
			f.mustStop()
			f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue, retry.DLQ(f.queue))...)
		})
	}
}

// TestDeadLetterAfterMaxAttempts: an always failing handler runs
// MaxAttempts times; then exactly one dead letter holds the original body
// and properties and the failure headers.
func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	for _, qt := range queueTypes {
		t.Run(string(qt), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			cfg := retryConfig(t, qt)
			f := newFixture(t, cfg, worker.Route{
				Name:        "order-handler",
				Exchange:    ".ex",
				BindingKeys: []string{"order.*"},
				Handler:     failing(rec, errors.New("database unavailable: code 42")),
			}).start()
			body := make([]byte, 256)
			for i := range body {
				body[i] = byte(i)
			}
			f.admin.Publish(f.q(".ex"), "order.created", amqp.Publishing{
				Body:          body,
				ContentType:   "application/octet-stream",
				CorrelationId: "corr-7",
				MessageId:     "msg-7",
				Headers:       amqp.Table{"x-custom": "keep-me", "x-number": int32(42)},
			})
			got := rec.wait(t, cfg.MaxAttempts, 15*time.Second)
			for i, c := range got {
				if c.attempt != i+1 {
					t.Errorf("call %d has attempt %d", i+1, c.attempt)
				}
				if c.key != "order.created" {
					t.Errorf("call %d saw routing key %q, want the original order.created", i+1, c.key)
				}
				if c.body != string(body) {
					t.Errorf("call %d saw a different body", i+1)
				}
			}
			dlq := retry.DLQ(f.queue)
			if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
				t.Fatalf("dlq holds %d, want 1", n)
			}
			rec.none(t, quiet)
			f.mustStop()
			f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue)...)
			f.expectCounts(1, dlq)

			m, ok := f.admin.Get(dlq)
			if !ok {
				t.Fatal("dlq is empty")
			}
			if string(m.Body) != string(body) {
				t.Errorf("dead letter body differs from the original:\n got %x\nwant %x", m.Body, body)
			}
			if m.ContentType != "application/octet-stream" || m.CorrelationId != "corr-7" || m.MessageId != "msg-7" {
				t.Errorf("properties changed: content type %q, correlation id %q, message id %q", m.ContentType, m.CorrelationId, m.MessageId)
			}
			if m.DeliveryMode != amqp.Persistent {
				t.Errorf("delivery mode %d, want persistent", m.DeliveryMode)
			}
			if got := header(t, m.Headers, "x-custom"); got != "keep-me" {
				t.Errorf("x-custom = %q", got)
			}
			if got := intHeader(t, m.Headers, "x-number"); got != 42 {
				t.Errorf("x-number = %d", got)
			}
			checkDeadLetter(t, m, f.queue, "order-handler", worker.KindExhausted, worker.KindError, cfg.MaxAttempts, "database unavailable: code 42")
			if got := header(t, m.Headers, worker.HeaderOriginalExchange); got != f.q(".ex") {
				t.Errorf("%s = %q, want %q", worker.HeaderOriginalExchange, got, f.q(".ex"))
			}
			if got := header(t, m.Headers, worker.HeaderOriginalKey); got != "order.created" {
				t.Errorf("%s = %q, want order.created", worker.HeaderOriginalKey, got)
			}
			first, _ := time.Parse(time.RFC3339Nano, header(t, m.Headers, worker.HeaderFirstFailure))
			last, _ := time.Parse(time.RFC3339Nano, header(t, m.Headers, worker.HeaderLastFailure))
			// The first failure is attempt 1's, the last attempt 3's.
			if last.Sub(first) < tier1+tier2 {
				t.Errorf("first failure %s and last failure %s are less than %s apart", first, last, tier1+tier2)
			}
		})
	}
}

// TestDeadLetterPermanent: Permanent goes to the DLQ at once.
func TestDeadLetterPermanent(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: failing(rec, worker.Permanent(errors.New("card declined"))),
	}).start()
	f.publish("", broker.Message{Body: []byte("pay"), MessageID: "p-1"})
	rec.wait(t, 1, 15*time.Second)
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
		t.Fatalf("dlq holds %d, want 1", n)
	}
	rec.none(t, quiet)
	f.mustStop()
	f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue)...)
	m, _ := f.admin.Get(dlq)
	checkDeadLetter(t, m, f.queue, f.queue, worker.KindPermanent, worker.KindPermanent, 1, "card declined")
	if string(m.Body) != "pay" || m.MessageId != "p-1" {
		t.Errorf("dead letter body %q id %q", m.Body, m.MessageId)
	}
}

// TestRetryAfterUsesSmallestTierAtLeastDelay: RetryAfter(500ms) with tiers
// 200ms and 1s waits in the 1s tier.
func TestRetryAfterUsesSmallestTierAtLeastDelay(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	cfg := retryConfig(t, broker.Quorum)
	cfg.RetryDelays = []time.Duration{200 * time.Millisecond, time.Second}
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		if d.Attempt == 1 {
			return worker.RetryAfter(500*time.Millisecond, errors.New("rate limited"))
		}
		return nil
	})}).start()
	short, long := retry.TierQueue(f.queue, 200*time.Millisecond), retry.TierQueue(f.queue, time.Second)
	f.publish("", broker.Message{Body: []byte("later")})
	first := rec.wait(t, 1, 15*time.Second)[0]

	// Watch both tiers until attempt 2 arrives.
	var second call
	seenLong, seenShort := 0, 0
	deadline := time.After(10 * time.Second)
watch:
	for {
		select {
		case second = <-rec.ch:
			break watch
		case <-deadline:
			t.Fatal("attempt 2 did not come")
		case <-time.After(20 * time.Millisecond):
			seenLong = max(seenLong, f.admin.Count(long))
			seenShort = max(seenShort, f.admin.Count(short))
		}
	}
	if second.attempt != 2 {
		t.Errorf("second call has attempt %d", second.attempt)
	}
	if gap := second.at.Sub(first.at); !tierPassed(gap, time.Second) {
		t.Errorf("attempt 2 came after %s, want about 1s or more (the 1s tier)", gap)
	}
	if seenLong != 1 {
		t.Errorf("the 1s tier held at most %d messages while waiting, want 1", seenLong)
	}
	if seenShort != 0 {
		t.Errorf("the 200ms tier held %d messages", seenShort)
	}
	rec.none(t, quiet)
	f.mustStop()
	f.expectCounts(0, f.queue, short, long, retry.DLQ(f.queue))
}

// TestRetryCopyDoesNotReachOtherBoundQueues: a retry copy of A's message
// goes back to A alone, never to B bound with the same key.
func TestRetryCopyDoesNotReachOtherBoundQueues(t *testing.T) {
	t.Parallel()
	recA, recB := newRecorder(), newRecorder()
	cfg := retryConfig(t, broker.Quorum)
	keys := []string{"evt.created"}
	f := newFixture(t, cfg,
		worker.Route{Queue: ".a", Exchange: ".ex", BindingKeys: keys, Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			recA.record(d)
			if d.Attempt == 1 {
				return errors.New("once")
			}
			return nil
		})},
		worker.Route{Queue: ".b", Exchange: ".ex", BindingKeys: keys, Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			recB.record(d)
			return nil
		})},
	).start()
	const n = 5
	for i := 0; i < n; i++ {
		f.admin.Publish(f.q(".ex"), "evt.created", amqp.Publishing{MessageId: fmt.Sprint("e-", i), Body: []byte(fmt.Sprint(i))})
	}
	gotA := recA.wait(t, 2*n, 15*time.Second)
	gotB := recB.wait(t, n, 15*time.Second)
	recB.none(t, quiet)
	recA.none(t, 100*time.Millisecond)
	perA := map[string][]int{}
	for _, c := range gotA {
		perA[c.id] = append(perA[c.id], c.attempt)
		if c.key != "evt.created" {
			t.Errorf("A saw routing key %q on attempt %d", c.key, c.attempt)
		}
	}
	for id, at := range perA {
		sort.Ints(at)
		if len(at) != 2 || at[0] != 1 || at[1] != 2 {
			t.Errorf("A handled %s with attempts %v, want [1 2]", id, at)
		}
	}
	perB := map[string]int{}
	for _, c := range gotB {
		perB[c.id]++
		if c.attempt != 1 {
			t.Errorf("B saw %s with attempt %d", c.id, c.attempt)
		}
	}
	for i := 0; i < n; i++ {
		if id := fmt.Sprint("e-", i); perB[id] != 1 {
			t.Errorf("B handled %s %d times, want 1", id, perB[id])
		}
	}
	f.mustStop()
	var all []string
	for _, s := range []string{".a", ".b"} {
		all = append(all, f.q(s), retry.DLQ(f.q(s)))
		all = append(all, tiers(f.q(s), tier1, tier2)...)
	}
	f.expectCounts(0, all...)
}

// TestRetryDiscardKeepsNothing: Discard acks; nothing is retried or kept.
func TestRetryDiscardKeepsNothing(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: failing(rec, worker.Discard(errors.New("stale event"))),
	}).start()
	f.publish("", broker.Message{Body: []byte("old")})
	rec.wait(t, 1, 15*time.Second)
	rec.none(t, quiet)
	f.mustStop()
	f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue, retry.DLQ(f.queue))...)
}

// TestDeadLetterInvalidAttemptHeader: a corrupt warren-attempt header
// dead-letters the message at once with reason invalid_attempt; the
// handler never runs and nothing loops.
func TestDeadLetterInvalidAttemptHeader(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: failing(rec, nil),
	}).start()
	bad := map[string]any{
		"string":   "abc",
		"negative": int32(-3),
		"huge":     int64(99999999),
		"bytes":    []byte("2"),
		"zero":     int32(0),
		"fraction": float64(1.5),
		"bool":     true,
		"empty":    "",
	}
	for name, v := range bad {
		f.admin.Publish("", f.queue, amqp.Publishing{MessageId: name, Body: []byte(name), Headers: amqp.Table{retry.AttemptHeader: v}})
	}
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, len(bad), 10*time.Second); n != len(bad) {
		t.Fatalf("dlq holds %d, want %d", n, len(bad))
	}
	rec.none(t, quiet)
	if c := rec.count(); c != 0 {
		t.Errorf("handler called %d times for corrupt attempt headers", c)
	}
	f.mustStop()
	f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue)...)
	seen := map[string]bool{}
	dead := f.admin.GetAll(dlq)
	if len(dead) != len(bad) {
		t.Errorf("dlq holds %d dead letters, want %d", len(dead), len(bad))
	}
	for _, m := range dead {
		seen[m.MessageId] = true
		checkDeadLetter(t, m, f.queue, f.queue, worker.KindBadAttempt, worker.KindBadAttempt, 1, retry.AttemptHeader)
		if string(m.Body) != m.MessageId {
			t.Errorf("dead letter %s has body %q", m.MessageId, m.Body)
		}
		if _, ok := m.Headers[retry.AttemptHeader]; !ok {
			t.Errorf("dead letter %s lost its %s header", m.MessageId, retry.AttemptHeader)
		}
	}
	for name := range bad {
		if !seen[name] {
			t.Errorf("message %s not in the dlq", name)
		}
	}
}

// TestRetryEmptyMessageWithoutID: no message id and an empty body is an
// ordinary message.
func TestRetryEmptyMessageWithoutID(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	var key atomic.Value
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		key.Store(d.IdempotencyKey)
		rec.record(d)
		return nil
	})}).start()
	f.admin.Publish("", f.queue, amqp.Publishing{})
	c := rec.wait(t, 1, 15*time.Second)[0]
	if c.id != "" || c.body != "" || c.attempt != 1 {
		t.Errorf("call saw id %q body %q attempt %d", c.id, c.body, c.attempt)
	}
	if k, _ := key.Load().(string); k == "" {
		t.Error("empty idempotency key")
	}
	rec.none(t, quiet)
	f.mustStop()
	f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue, retry.DLQ(f.queue))...)
}

// TestRetryWithoutMessageIDKeepsIdentity: a message published without a
// message id keeps having none on its retries and in the DLQ, and its
// IdempotencyKey is the same on every attempt, as Delivery documents.
func TestRetryWithoutMessageIDKeepsIdentity(t *testing.T) {
	t.Parallel()
	type seen struct {
		attempt int
		id, key string
	}
	ch := make(chan seen, 10)
	cfg := retryConfig(t, broker.Quorum)
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		ch <- seen{d.Attempt, d.MessageID, d.IdempotencyKey}
		return errors.New("always")
	})}).start()
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("no id")})
	var got []seen
	for len(got) < cfg.MaxAttempts {
		select {
		case s := <-ch:
			got = append(got, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d calls", len(got), cfg.MaxAttempts)
		}
	}
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
		t.Fatalf("dlq holds %d", n)
	}
	f.mustStop()
	for _, s := range got[1:] {
		if s.id != "" {
			t.Errorf("attempt %d sees message id %q; the original had none", s.attempt, s.id)
		}
		if s.key != got[0].key {
			t.Errorf("attempt %d has idempotency key %q, attempt 1 had %q", s.attempt, s.key, got[0].key)
		}
	}
	m, _ := f.admin.Get(dlq)
	if m.MessageId != "" {
		t.Errorf("dead letter has message id %q; the original had none", m.MessageId)
	}
}

// TestDeadLetterOfExpiringMessageIsKept: a message published with a
// per-message TTL (expiration) and dead-lettered must stay in the DLQ,
// which has no TTL; the broker's own dead-lettering drops the expiration
// for the same reason.
func TestDeadLetterOfExpiringMessageIsKept(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: failing(rec, worker.Permanent(errors.New("bad"))),
	}).start()
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("ttl"), MessageId: "ttl-1", Expiration: "1500"})
	rec.wait(t, 1, 10*time.Second)
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
		t.Fatalf("dlq holds %d", n)
	}
	f.mustStop()
	// Past the message's own expiration: the dead letter must still be there.
	time.Sleep(2 * time.Second)
	m, ok := f.admin.Get(dlq)
	if !ok {
		t.Fatal("the dead letter vanished from the DLQ: it kept the original's expiration (1500ms)")
	}
	if m.Expiration != "" {
		t.Errorf("dead letter carries expiration %q", m.Expiration)
	}
}

type order struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

// TestDeadLetterJSONDecodeFailure: a body that does not decode into T is
// dead-lettered at once with kind decode; the function never runs on it.
func TestDeadLetterJSONDecodeFailure(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var decoded []order
	called := make(chan string, 10)
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: worker.JSON(func(ctx context.Context, d *worker.Delivery, v order) error {
			mu.Lock()
			decoded = append(decoded, v)
			mu.Unlock()
			called <- d.MessageID
			return nil
		}),
	}).start()
	garbage := []byte{0xff, 0xfe, 0x00, 0x7b, 0x22, 0x01, 0x80, 0xc3}
	f.publish("", broker.Message{MessageID: "garbage", Body: garbage, ContentType: "application/json"})
	f.publish("", broker.Message{MessageID: "wrong-type", Body: []byte(`{"name":"x","n":"three"}`)})
	f.publish("", broker.Message{MessageID: "good", Body: []byte(`{"name":"widget","n":3}`)})

	select {
	case id := <-called:
		if id != "good" {
			t.Errorf("handler function called for %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("valid body not delivered")
	}
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 2, 10*time.Second); n != 2 {
		t.Fatalf("dlq holds %d, want 2", n)
	}
	select {
	case id := <-called:
		t.Errorf("handler function called again for %q", id)
	case <-time.After(quiet):
	}
	f.mustStop()
	f.expectCounts(0, append(tiers(f.queue, tier1, tier2), f.queue)...)
	mu.Lock()
	if len(decoded) != 1 || decoded[0] != (order{Name: "widget", N: 3}) {
		t.Errorf("decoded %+v", decoded)
	}
	mu.Unlock()
	for _, m := range f.admin.GetAll(dlq) {
		checkDeadLetter(t, m, f.queue, f.queue, worker.KindDecode, worker.KindDecode, 1, "decoding message body")
		if _, ok := m.Headers[retry.AttemptHeader]; ok {
			t.Errorf("%s: a decode failure was retried (it carries %s)", m.MessageId, retry.AttemptHeader)
		}
		switch m.MessageId {
		case "garbage":
			if string(m.Body) != string(garbage) || m.ContentType != "application/json" {
				t.Errorf("garbage dead letter changed: body %x, content type %q", m.Body, m.ContentType)
			}
		case "wrong-type":
		default:
			t.Errorf("unexpected dead letter %q", m.MessageId)
		}
	}
}

// TestRetryProxyCutsLoseNothing: with every message going round the retry
// tiers, cutting the worker's connections three times loses no message:
// each ends in the DLQ (duplicates allowed) or is still on its way.
func TestRetryProxyCutsLoseNothing(t *testing.T) {
	t.Parallel()
	proxy, url := testenv.AMQPProxy(t)
	cfg := retryConfig(t, broker.Quorum)
	cfg.AMQPURL = url
	var calls, retried atomic.Int64
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		calls.Add(1)
		if d.Attempt > 1 {
			retried.Add(1)
		}
		return fmt.Errorf("always fails (attempt %d)", d.Attempt)
	})}).start()

	const n = 200
	ps := make([]amqp.Publishing, n)
	for i := range ps {
		ps[i] = amqp.Publishing{MessageId: fmt.Sprintf("id-%03d", i), Body: []byte(fmt.Sprint(i))}
	}
	f.admin.PublishBatch("", f.queue, ps)

	// Cut while retry copies are flowing.
	waitUntil(t, 10*time.Second, func() bool { return retried.Load() >= 20 })
	for i := 0; i < 3; i++ {
		proxy.Cut()
		t.Logf("cut %d at %d calls, %d retried", i+1, calls.Load(), retried.Load())
		time.Sleep(150 * time.Millisecond)
	}

	dlq := retry.DLQ(f.queue)
	tierQs := tiers(f.queue, tier1, tier2)
	// Quiescent: the DLQ holds at least n and neither it nor the handler
	// count moved for a while (longer than the largest tier).
	_, ok := testenv.WaitStable(15*time.Second, time.Second, func() int {
		d := f.admin.Count(dlq)
		if d < n {
			return -int(time.Now().UnixNano() % 1e9) // not there yet: never stable
		}
		return d*1_000_000 + int(calls.Load())
	})
	if !ok {
		t.Errorf("not quiescent in time: dlq %d, calls %d", f.admin.Count(dlq), calls.Load())
	}
	f.mustStop()

	// Tiers first, then Q, then the DLQ: a copy can only move from a tier
	// into Q, so reading in that order sees every message once.
	where := map[string][]string{}
	reasons := map[string]int{}
	for _, q := range append(tierQs, f.queue, dlq) {
		for _, m := range f.admin.GetAll(q) {
			where[m.MessageId] = append(where[m.MessageId], q)
			if q == dlq {
				r, _ := m.Headers[worker.HeaderDeadLetterReason].(string)
				reasons[fmt.Sprintf("%s/attempts=%v", r, m.Headers[worker.HeaderAttempts])]++
			}
		}
	}
	missing, dups, inFlight := 0, 0, 0
	for _, p := range ps {
		qs := where[p.MessageId]
		if len(qs) == 0 {
			missing++
			t.Errorf("message %s is lost", p.MessageId)
			continue
		}
		inDLQ := 0
		for _, q := range qs {
			if q == dlq {
				inDLQ++
			} else {
				inFlight++
			}
		}
		if inDLQ > 1 {
			dups += inDLQ - 1
		}
	}
	t.Logf("%d messages, %d calls, %d missing, %d duplicate dead letters, %d still in Q or tiers; dead letters by reason: %v",
		n, calls.Load(), missing, dups, inFlight, reasons)
}

// TestRetryDelayIgnoresPerMessageExpiration: a message published with a
// per-message expiration shorter than the tier must still wait the whole
// tier before its next attempt.
func TestRetryDelayIgnoresPerMessageExpiration(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	cfg := retryConfig(t, broker.Quorum)
	cfg.RetryDelays = []time.Duration{time.Second, 2 * time.Second}
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		if d.Attempt == 1 {
			return errors.New("once")
		}
		return nil
	})}).start()
	// 300ms is ample for the idle consumer to take it off Q.
	f.admin.Publish("", f.queue, amqp.Publishing{Body: []byte("short ttl"), MessageId: "ttl-2", Expiration: "300"})
	got := rec.wait(t, 2, 10*time.Second)
	if gap := got[1].at.Sub(got[0].at); !tierPassed(gap, time.Second) {
		t.Errorf("attempt 2 came %s after attempt 1, want >= the 1s tier: the retry copy kept the original's expiration", gap)
	}
}

// TestDeadLetterErrorHeaderIsBounded: the error text in a dead letter is
// cut to MaxErrorHeader bytes, keeping its start.
func TestDeadLetterErrorHeaderIsBounded(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"ascii":        "first line: " + strings.Repeat("x", 5000),
		"multibyte":    "zaźółć: " + strings.Repeat("ł", 3000),
		"invalid-utf8": "bad byte \xff in: " + strings.Repeat("y", 5000),
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
				Handler: failing(rec, worker.Permanent(errors.New(text))),
			}).start()
			f.publish("", broker.Message{Body: []byte(name)})
			dlq := retry.DLQ(f.queue)
			if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
				t.Fatalf("dlq holds %d", n)
			}
			f.mustStop()
			m, _ := f.admin.Get(dlq)
			got := header(t, m.Headers, worker.HeaderError)
			if len(got) > worker.MaxErrorHeader {
				t.Errorf("error header is %d bytes, want <= %d", len(got), worker.MaxErrorHeader)
			}
			if len(got) < worker.MaxErrorHeader/2 {
				t.Errorf("error header cut to %d bytes (%q); want most of the %d allowed", len(got), got, worker.MaxErrorHeader)
			}
			if !strings.HasPrefix(got, "permanent: "+text[:8]) {
				t.Errorf("error header %.40q... does not start with the error", got)
			}
		})
	}
}

// TestRetryWhenTierQueueIsGone: a retry copy the broker cannot route (its
// tier queue was deleted) is not lost: the topology is declared again, the
// message requeued without spending an attempt, and its retries go on.
func TestRetryWhenTierQueueIsGone(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Quorum), worker.Route{
		Handler: failing(rec, errors.New("flaky")),
	}).start()
	f.admin.DeleteQueueNow(retry.TierQueue(f.queue, tier1))
	f.publish("", broker.Message{Body: []byte("x"), MessageID: "gone-tier"})
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 1, 15*time.Second); n != 1 {
		t.Fatalf("dlq holds %d, want 1", n)
	}
	f.mustStop()
	calls := rec.count()
	if calls < 4 {
		t.Fatalf("handler ran %d times; want the run whose copy failed plus 3 attempts", calls)
	}
	m, _ := f.admin.Get(dlq)
	checkDeadLetter(t, m, f.queue, f.queue, worker.KindExhausted, worker.KindError, 3, "flaky")
	if m.MessageId != "gone-tier" {
		t.Errorf("dead letter id %q", m.MessageId)
	}
}

// TestDeadLetterWhenDLQIsGone: a dead letter that cannot be stored (its
// DLQ was deleted) does not make the message disappear: the topology is
// declared again and the message requeued, and its dead letter lands in
// the new DLQ.
func TestDeadLetterWhenDLQIsGone(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Classic), worker.Route{
		Handler: failing(rec, worker.Permanent(errors.New("no good"))),
	}).start()
	dlq := retry.DLQ(f.queue)
	f.admin.DeleteQueueNow(dlq)
	f.publish("", broker.Message{Body: []byte("x"), MessageID: "gone-dlq"})
	waitUntil(t, 15*time.Second, func() bool { return f.admin.TryCount(dlq) == 1 })
	f.mustStop()
	if calls := rec.count(); calls != 2 {
		t.Fatalf("handler ran %d times, want 2 (the run whose dead letter failed, and one more)", calls)
	}
	m, _ := f.admin.Get(dlq)
	checkDeadLetter(t, m, f.queue, f.queue, worker.KindPermanent, worker.KindPermanent, 1, "no good")
}

// tierPassed reports whether gap, measured on this process's clock, is at
// least a tier's delay, which the broker measures on its own: the Erlang
// runtime corrects its clock toward the system's by running up to 1%
// fast or slow (after this machine's clock was stepped, tiers of 1s came
// back after 996-999ms by ours), so a gap may fall short by that much.
func tierPassed(gap, tier time.Duration) bool { return gap >= tier-tier/100-time.Millisecond }

// TestCopiesOfAnotherUsersMessage: a message whose user_id names the
// producer's broker user, not the worker's, is retried and dead-lettered
// like any other: RabbitMQ refuses a publish whose user_id is not the
// publishing user, so the copies carry it in a header instead (before,
// every copy was refused: no retry, and the message reached the DLQ only
// through the broker's reject, without warren's headers).
func TestCopiesOfAnotherUsersMessage(t *testing.T) {
	t.Parallel()
	user := fmt.Sprintf("warren-producer-%d", time.Now().UnixNano())
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	vhost, _ := url.PathUnescape(strings.TrimPrefix(u.Path, "/"))
	if vhost == "" {
		vhost = "/"
	}
	for _, args := range [][]string{{"add_user", user, "pw"}, {"set_permissions", "-p", vhost, user, ".*", ".*", ".*"}} {
		if out, err := testenv.Rabbitmqctl(t, args...); err != nil {
			t.Fatalf("rabbitmqctl %s: %v: %s", args[0], err, out)
		}
	}
	t.Cleanup(func() { _, _ = testenv.Rabbitmqctl(t, "delete_user", user) })

	rec := newRecorder()
	f := newFixture(t, retryConfig(t, broker.Classic), worker.Route{
		Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
			rec.record(d)
			if d.Attempt == 1 {
				return errors.New("try again")
			}
			return worker.Permanent(errors.New("no"))
		}),
	}).start()

	u.User = url.UserPassword(user, "pw")
	pc, err := amqp.Dial(u.String())
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	defer pc.Close()
	ch, err := pc.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", f.queue, false, false, amqp.Publishing{MessageId: "u-1", UserId: user, Body: []byte("x")})
	if err != nil || !dc.Wait() {
		t.Fatalf("publishing as %s: %v", user, err)
	}

	calls := rec.wait(t, 2, 30*time.Second)
	if calls[0].attempt != 1 || calls[1].attempt != 2 {
		t.Fatalf("attempts %d and %d, want 1 and 2 (the retry copy was stored)", calls[0].attempt, calls[1].attempt)
	}
	dlq := retry.DLQ(f.queue)
	if n := f.admin.WaitCount(dlq, 1, 10*time.Second); n != 1 {
		t.Fatalf("the DLQ holds %d, want the dead letter", n)
	}
	m, _ := f.admin.Get(dlq)
	if m.Headers[worker.HeaderDeadLetterReason] != worker.KindPermanent || m.Headers[worker.HeaderOriginalUserID] != user || m.UserId != "" {
		t.Fatalf("dead letter: reason %v, original user %v, user_id %q; want permanent, %s and none",
			m.Headers[worker.HeaderDeadLetterReason], m.Headers[worker.HeaderOriginalUserID], m.UserId, user)
	}
}

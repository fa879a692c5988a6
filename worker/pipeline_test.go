package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
)

// These tests run a route's pipeline in-process, on fakes of the
// broker's acknowledger and publisher and on the memory dedupe store:
// they need no broker and no Redis.

func failing(err error) Handler {
	return HandlerFunc(func(context.Context, *Delivery) error { return err })
}

// A retry copy the broker does not confirm leaves the original unacked:
// requeued when the copy was lost or nacked, dead-lettered in its place
// when the broker refused the copy itself.
func TestPipelineRetryCopyNotStored(t *testing.T) {
	refused := &broker.ChannelError{Err: &amqp.Error{Code: 406, Reason: "PRECONDITION_FAILED - message size exceeds the limit"}}
	cases := []struct {
		name      string
		err       error
		want      string   // the original's settlement
		published []string // copies stored
		redeclare bool
	}{
		{"lost", errors.New("connection closed"), settledRequeue, nil, false},
		{"nacked", broker.ErrNacked, settledRequeue, nil, false},
		{"unroutable", &broker.UnroutableError{RoutingKey: "q.retry.1s", ReplyCode: 312, ReplyText: "NO_ROUTE"}, settledRequeue, nil, true},
		{"refused", refused, settledAckNow, []string{"q.dlq"}, false},
		{"too large", &broker.MessageTooLargeError{Size: 17 << 20, Limit: 16 << 20, Err: refused}, settledReject, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			copies := &fakeCopies{publish: func(queue string, _ broker.Message) error {
				if queue == "q.retry.1s" {
					return c.err
				}
				return nil
			}}
			r := newRig(t, rigOptions{handler: failing(errors.New("db down")), copies: copies, dedupe: true})
			r.start()
			tag := r.deliver("m1", nil)
			r.acks.waitSettled(t, 1)
			r.close()
			if got := r.acks.result(tag); got != c.want {
				t.Errorf("original settled with %q, want %q", got, c.want)
			}
			if got := copies.queues(); !slices.Equal(got, c.published) {
				t.Errorf("copies stored in %v, want %v", got, c.published)
			}
			if got := copies.redeclare.Load() > 0; got != c.redeclare {
				t.Errorf("redeclared %v, want %v", got, c.redeclare)
			}
			// Whatever happened, the claim is given up once settled, so
			// the next delivery may run at once.
			if st, err := r.store.Claim(context.Background(), r.key("m1"), "other", time.Minute); err != nil || st != dedupe.Claimed {
				t.Errorf("claim after settlement: %v, %v; want claimed", st, err)
			}
		})
	}
}

// A message whose copy is unroutable while the topology cannot be
// declared again is requeued only after a pause: at once, it would come
// straight back and loop as fast as the broker delivers.
func TestPipelineUnroutableCopyWithoutTopologyPauses(t *testing.T) {
	copies := &fakeCopies{
		publish: func(string, broker.Message) error {
			return &broker.UnroutableError{RoutingKey: "q.retry.1s", ReplyCode: 312, ReplyText: "NO_ROUTE"}
		},
		redeclareErr: errors.New("ACCESS_REFUSED - configure access to queue 'q.retry.1s' refused"),
	}
	r := newRig(t, rigOptions{handler: failing(errors.New("db down")), copies: copies})
	checkRequeuedAfterPause(t, r)
}

// checkRequeuedAfterPause starts r, delivers m1 and checks that it is
// requeued, and not before requeuePause.
func checkRequeuedAfterPause(t *testing.T, r *rig) {
	t.Helper()
	r.start()
	start := time.Now()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	took := time.Since(start)
	r.close()
	if got := r.acks.result(tag); got != settledRequeue {
		t.Errorf("original settled with %q, want %q", got, settledRequeue)
	}
	if took < requeuePause {
		t.Errorf("requeued %s after delivery, before the %s pause", took, requeuePause)
	}
}

// A message too large to copy that goes round a tier without spending an
// attempt (here: in progress elsewhere) has not had its turn: it is
// requeued after a pause, not rejected to the DLQ as too large.
func TestPipelineTooLargeUnspentRoundIsRequeued(t *testing.T) {
	refused := &broker.ChannelError{Err: &amqp.Error{Code: 406, Reason: "PRECONDITION_FAILED - message size exceeds the limit"}}
	copies := &fakeCopies{publish: func(string, broker.Message) error {
		return &broker.MessageTooLargeError{Size: 17 << 20, Limit: 16 << 20, Err: refused}
	}}
	ran := make(chan struct{}, 1)
	h := HandlerFunc(func(context.Context, *Delivery) error { ran <- struct{}{}; return nil })
	// A short lease of its own: the message waits parked for the other
	// worker's claim about that long before it goes round.
	r := newRig(t, rigOptions{handler: h, copies: copies, dedupe: true, lease: 200 * time.Millisecond})
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "another-worker", time.Hour); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim by another worker: %v, %v", st, err)
	}
	checkRequeuedAfterPause(t, r)
	select {
	case <-ran:
		t.Error("the handler ran while another worker held the claim")
	default:
	}
}

// A dead letter the broker refuses falls back to the broker's own
// dead-lettering: a reject, never an ack.
func TestPipelineDeadLetterRefusedIsRejected(t *testing.T) {
	refused := &broker.ChannelError{Err: &amqp.Error{Code: 406, Reason: "PRECONDITION_FAILED"}}
	copies := &fakeCopies{publish: func(string, broker.Message) error { return refused }}
	r := newRig(t, rigOptions{handler: failing(Permanent(errors.New("bad"))), copies: copies})
	r.start()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	if got := r.acks.result(tag); got != settledReject {
		t.Errorf("original settled with %q, want %q", got, settledReject)
	}
}

// When the drain begins, jobs that intake claimed but no handler started
// go back to the queue with their claims released.
func TestPipelineDrainReleasesUnstartedClaims(t *testing.T) {
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, d *Delivery) error {
		started <- struct{}{}
		<-release
		return nil
	})
	r := newRig(t, rigOptions{handler: h, concurrency: 1, dedupe: true})
	r.start()
	const n = 3 // one runs, the others wait claimed in the hand-out buffer
	for i := range n {
		r.deliver(string(rune('a'+i)), nil)
	}
	<-started
	waitFor(t, func() bool { return r.store.Len() == n }) // all three claimed
	stopped := make(chan struct{})
	go func() { r.pipe.stop(); close(stopped) }()
	<-stopped
	close(release)
	r.pipe.wait()
	r.close()
	results := r.acks.snapshot()
	if results[1] != settledAck {
		t.Errorf("the running message settled with %q, want ack", results[1])
	}
	for tag := uint64(2); tag <= n; tag++ {
		if results[tag] != settledRequeue {
			t.Errorf("unstarted message %d settled with %q, want requeue", tag, results[tag])
		}
		id := string(rune('a' + int(tag) - 1))
		if st, err := r.store.Claim(context.Background(), r.key(id), "other", time.Minute); err != nil || st != dedupe.Claimed {
			t.Errorf("claim of unstarted %s after the drain: %v, %v; want claimed", id, st, err)
		}
	}
	if st, _ := r.store.Claim(context.Background(), r.key("a"), "other", time.Minute); st != dedupe.Done {
		t.Errorf("the message that ran is %v, want done", st)
	}
}

// The finisher tries a done mark again while the store is unreachable,
// and acks once it is stored.
func TestPipelineFinisherRetriesDoneMarks(t *testing.T) {
	r := newRig(t, rigOptions{handler: failing(nil), dedupe: true})
	r.store.markFails.Store(int32(markRetries.tries - 1))
	r.start()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	if got := r.acks.result(tag); got != settledAck {
		t.Errorf("settled with %q, want ack", got)
	}
	if got := r.store.marks.Load(); got != int32(markRetries.tries) {
		t.Errorf("%d mark calls, want %d", got, markRetries.tries)
	}
	if st, _ := r.store.Claim(context.Background(), r.key("m1"), "other", time.Minute); st != dedupe.Done {
		t.Errorf("after the retries the message is %v, want done", st)
	}
	if r.health.storeDown.Load() {
		t.Error("readiness still says the store is down after it answered")
	}
}

// A claim the worker renewed recently is marked done as held (a plain
// SET on Redis); a retry of the mark, later, is not.
func TestPipelineMarksHeldClaimsAsHeld(t *testing.T) {
	r := newRig(t, rigOptions{handler: failing(nil), dedupe: true})
	r.store.markFails.Store(1)
	r.start()
	r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	got := r.store.heldFlags()
	if len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 1 {
		t.Fatalf("mark calls with Held flags %v, want two calls of one request", got)
	}
	if !got[0][0] || got[1][0] {
		t.Errorf("Held flags %v, want true on the first try and false on the retry", got)
	}
	if st, _ := r.store.Claim(context.Background(), r.key("m1"), "other", time.Minute); st != dedupe.Done {
		t.Errorf("the message is %v, want done", st)
	}
}

// A held done mark that replaced another owner's claim is reported: the
// message may have run twice.
func TestPipelineWarnsOfAMarkOverAnotherClaim(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := newRig(t, rigOptions{handler: failing(nil), dedupe: true, log: zap.New(core)})
	r.store.markOver.Store(true)
	r.start()
	r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	if n := logs.FilterMessageSnippet("done mark stored over another owner's claim: ").Len(); n != 1 {
		t.Errorf("%d warnings of a mark over another claim, want 1; logs %v", n, logs.All())
	}
	if n := logs.FilterMessageSnippet("done mark not stored").Len(); n != 0 {
		t.Errorf("%d warnings that the mark was not stored, want none", n)
	}
}

// A claim whose renewals did not get through is marked with the owner
// check.
func TestPipelineMarksStaleClaimsWithTheOwnerCheck(t *testing.T) {
	const lease = 300 * time.Millisecond
	started := make(chan struct{})
	r := newRig(t, rigOptions{dedupe: true, lease: lease, handler: HandlerFunc(func(ctx context.Context, _ *Delivery) error {
		close(started)
		time.Sleep(lease) // renewals hang meanwhile: the claim is not fresh after this
		return nil
	})})
	r.store.hang.Store(true)
	r.start()
	r.deliver("m1", nil)
	<-started
	r.acks.waitSettled(t, 1)
	r.close()
	got := r.store.heldFlags()
	if len(got) == 0 || len(got[0]) != 1 || got[0][0] {
		t.Fatalf("mark calls with Held flags %v, want the first not held", got)
	}
}

// The finisher gives a done mark up after markRetries.tries calls, and acks the
// message all the same: its effect has happened.
func TestPipelineFinisherGivesUp(t *testing.T) {
	r := newRig(t, rigOptions{handler: failing(nil), dedupe: true})
	r.store.markFails.Store(100)
	r.start()
	tag := r.deliver("m1", nil)
	r.acks.waitSettled(t, 1)
	r.close()
	if got := r.acks.result(tag); got != settledAck {
		t.Errorf("settled with %q, want ack", got)
	}
	if got := r.store.marks.Load(); got != int32(markRetries.tries) {
		t.Errorf("%d mark calls, want %d", got, markRetries.tries)
	}
	if !r.health.storeDown.Load() {
		t.Error("the store answered no mark call, but readiness says it is up")
	}
}

// After a reconnect, the result of a message its dead channel delivered
// is dropped (the broker redelivers it); a message that waited for a
// handler on the dead channel does not run at all.
func TestPipelineStaleAfterReconnect(t *testing.T) {
	var runs atomic.Int32
	entered := make(chan struct{})
	proceed := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, d *Delivery) error {
		runs.Add(1)
		if d.MessageID == "first" {
			close(entered)
			<-proceed
		}
		return nil
	})
	r := newRig(t, rigOptions{handler: h, concurrency: 1, dedupe: true})
	r.start()
	r.deliver("first", nil)
	<-entered
	r.deliver("second", nil) // waits for the busy handler, claimed
	waitFor(t, func() bool { return r.store.Len() == 2 })
	r.acks.closed.Store(true) // the channel dies
	close(proceed)
	// The stale message is dropped with its claim released before the
	// drain begins (a drain would give it back instead).
	waitFor(t, func() bool { return r.store.Len() == 1 })
	r.close()
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (the stale message must not run)", n)
	}
	// The first message's result was sent and dropped; the stale one
	// got none (the broker requeues it) and its claim was released.
	if n := r.acks.attempts.Load(); n != 1 {
		t.Errorf("%d results sent, want 1", n)
	}
	if n := len(r.acks.snapshot()); n != 0 {
		t.Errorf("%d results taken by the dead channel", n)
	}
	if st, err := r.store.Claim(context.Background(), r.key("second"), "other", time.Minute); err != nil || st != dedupe.Claimed {
		t.Errorf("claim of the stale message: %v, %v; want released", st, err)
	}
}

// waitFor waits until cond holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A route's DedupeKey that panics on a message dead-letters it, kind
// panic, without running its handler: the worker does not die, and the
// message does not come back to panic again.
func TestPipelineDedupeKeyPanicDeadLetters(t *testing.T) {
	for _, withDedupe := range []bool{false, true} {
		ran := make(chan struct{}, 1)
		h := HandlerFunc(func(context.Context, *Delivery) error { ran <- struct{}{}; return nil })
		r := newRig(t, rigOptions{handler: h, dedupe: withDedupe, dedupeKey: func(d *Delivery) string {
			var fields map[string]string
			return fields["id"] + string(d.Body[100]) // out of range
		}})
		r.start()
		tag := r.deliver("m1", nil)
		r.acks.waitSettled(t, 1)
		r.close()
		if got := r.acks.result(tag); got != settledAckNow {
			t.Errorf("dedupe %v: original settled with %q, want %q (after its dead letter)", withDedupe, got, settledAckNow)
		}
		if q := r.copies.queues(); !slices.Equal(q, []string{"q.dlq"}) {
			t.Fatalf("dedupe %v: copies went to %v, want [q.dlq]", withDedupe, q)
		}
		r.copies.mu.Lock()
		kind := r.copies.messages[0].Headers[HeaderErrorKind]
		errText, _ := r.copies.messages[0].Headers[HeaderError].(string)
		r.copies.mu.Unlock()
		if kind != KindPanic || !strings.Contains(errText, "Route.DedupeKey panicked") {
			t.Errorf("dedupe %v: dead letter of kind %v, error %q", withDedupe, kind, errText)
		}
		select {
		case <-ran:
			t.Errorf("dedupe %v: the handler ran", withDedupe)
		default:
		}
	}
}

// downOnce answers the first ClaimAll as an unreachable store does.
type downOnce struct {
	*flakyStore
	n atomic.Int32
}

// downUntilSecondBatch is downOnce whose single claims (a job's own, as
// an ordered message waiting in place makes) fail too until the second
// ClaimAll has run.
type downUntilSecondBatch struct{ downOnce }

func (s *downUntilSecondBatch) Claim(ctx context.Context, key, owner string, lease time.Duration) (dedupe.Status, error) {
	if s.n.Load() < 2 {
		return 0, errStoreDown
	}
	return s.flakyStore.Claim(ctx, key, owner, lease)
}

func (s *downOnce) ClaimAll(ctx context.Context, reqs []dedupe.Ref, lease time.Duration) []dedupe.ClaimResult {
	if s.n.Add(1) == 1 {
		res := make([]dedupe.ClaimResult, len(reqs))
		for i := range res {
			res[i].Err = errStoreDown
		}
		return res
	}
	return s.flakyStore.ClaimAll(ctx, reqs, lease)
}

// recorder is a handler that records the messages it ran, in order, and
// fails the ones named in fail.
type recorder struct {
	mu   sync.Mutex
	ran  []string
	fail map[string]bool
	once chan string // each run's id, when it fails
}

func (h *recorder) Handle(_ context.Context, d *Delivery) error {
	h.mu.Lock()
	h.ran = append(h.ran, d.MessageID)
	h.mu.Unlock()
	if h.fail[d.MessageID] {
		select {
		case h.once <- d.MessageID:
		default:
		}
		return errors.New("boom")
	}
	return nil
}

func (h *recorder) runs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ran)
}

// On an ordered partition, a message that cannot run yet because the
// dedupe store is down waits in place and claims again, spending no
// attempt: round a tier, the partition's next message would run first.
func TestOrderedStoreDownWaitsInPlace(t *testing.T) {
	h := &recorder{}
	r := newRig(t, rigOptions{handler: h, concurrency: 1, dedupe: true, ordered: true,
		policy: retry.Policy{Delays: []time.Duration{10 * time.Millisecond}, MaxAttempts: 5}})
	r.pipe.intake.claims.store = &downOnce{flakyStore: r.store}
	r.start()
	t1 := r.deliver("m1", nil)
	t2 := r.deliver("m2", nil)
	r.acks.waitSettled(t, 2)
	r.close()
	if got := r.acks.result(t1); got != settledAck {
		t.Errorf("m1 settled with %q, want an ack", got)
	}
	if got := r.acks.result(t2); got != settledAck {
		t.Errorf("m2 settled with %q, want an ack", got)
	}
	if q := r.copies.queues(); len(q) > 0 {
		t.Errorf("copies went to %v, want none: the message waits in place", q)
	}
	if got := h.runs(); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("ran %v, want [m1 m2]", got)
	}
}

// On an ordered partition, a message whose claim this route holds for
// another delivery of it (a copy waiting behind it in the partition) does
// not wait in place for that claim: it could never be freed while the
// partition's handler waits. It goes round a tier; the copy runs.
func TestOrderedCopyBehindDoesNotWaitForItself(t *testing.T) {
	h := &recorder{}
	r := newRig(t, rigOptions{handler: h, concurrency: 1, dedupe: true, ordered: true, lease: 2 * time.Second,
		policy: retry.Policy{Delays: []time.Duration{10 * time.Millisecond}, MaxAttempts: 5}})
	// The store stays down for the first delivery until intake has
	// claimed the second.
	down := &downUntilSecondBatch{downOnce{flakyStore: r.store}}
	r.pipe.intake.claims.store = down
	r.start()
	t1 := r.deliver("dup", nil)
	waitFor(t, func() bool { return down.n.Load() >= 1 }) // its claim met the store down
	t2 := r.deliver("dup", nil)                           // claimed by intake, held by the keeper
	r.acks.waitSettled(t, 2)
	r.close()
	if got := r.acks.result(t1); got != settledAckNow {
		t.Errorf("the first delivery settled with %q, want %q after its tier copy", got, settledAckNow)
	}
	if got := r.acks.result(t2); got != settledAck {
		t.Errorf("the copy behind it settled with %q, want an ack", got)
	}
	if got := h.runs(); !slices.Equal(got, []string{"dup"}) {
		t.Errorf("ran %v, want [dup]", got)
	}
}

// countingClaims counts the single claims made of a store.
type countingClaims struct {
	*flakyStore
	claims atomic.Int32
}

func (s *countingClaims) Claim(ctx context.Context, key, owner string, lease time.Duration) (dedupe.Status, error) {
	s.claims.Add(1)
	return s.flakyStore.Claim(ctx, key, owner, lease)
}

// On an ordered partition, a message whose claim a live owner elsewhere
// holds (a worker that lost its broker connection and still runs it)
// waits in place as long as that owner renews the claim: the key's next
// message does not overtake it.
func TestOrderedWaitsForALiveHolder(t *testing.T) {
	h := &recorder{}
	const lease = 200 * time.Millisecond
	r := newRig(t, rigOptions{handler: h, concurrency: 1, dedupe: true, ordered: true, lease: lease,
		policy: retry.Policy{Delays: []time.Duration{50 * time.Millisecond}, MaxAttempts: 5}})
	store := &countingClaims{flakyStore: r.store}
	r.pipe.intake.claims.store = store
	ctx := context.Background()
	if st, err := r.store.Claim(ctx, r.key("m1"), "live", lease); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim by the live owner: %v %v", st, err)
	}
	stop := make(chan struct{})
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		tick := time.NewTicker(lease / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = r.store.Extend(ctx, r.key("m1"), "live", lease)
			}
		}
	}()
	r.start()
	t1 := r.deliver("m1", nil)
	t2 := r.deliver("m2", nil)
	// Far more checks of the holder than a lease's worth of rounds.
	waitFor(t, func() bool { return store.claims.Load() >= int32(4*r.route.Retry.WaitRounds(lease)) })
	if got := h.runs(); len(got) != 0 {
		t.Fatalf("ran %v while the live owner held m1's claim", got)
	}
	close(stop)
	<-renewing
	if err := r.store.MarkDone(ctx, r.key("m1"), "live", time.Hour); err != nil {
		t.Fatal(err)
	}
	r.acks.waitSettled(t, 2)
	r.close()
	if got := r.acks.result(t1); got != settledAck {
		t.Errorf("m1 settled with %q, want an ack (done elsewhere)", got)
	}
	if got := r.acks.result(t2); got != settledAck {
		t.Errorf("m2 settled with %q, want an ack", got)
	}
	if got := h.runs(); !slices.Equal(got, []string{"m2"}) {
		t.Errorf("ran %v, want [m2]", got)
	}
	if q := r.copies.queues(); len(q) > 0 {
		t.Errorf("copies went to %v, want none", q)
	}
}

// On an ordered partition without dedupe, a drain that begins while the
// head message waits for its retry in place puts it back at the head of
// its queue; the next message, already handed to the worker, must not run
// then: it goes back too.
func TestOrderedDrainStartsNothingAfterTheHead(t *testing.T) {
	h := &recorder{fail: map[string]bool{"m1": true}, once: make(chan string, 1)}
	r := newRig(t, rigOptions{handler: h, concurrency: 1, ordered: true,
		policy: retry.Policy{Delays: []time.Duration{time.Hour}, MaxAttempts: 5}})
	r.start()
	t1 := r.deliver("m1", nil)
	t2 := r.deliver("m2", nil)
	<-h.once // m1 failed, and waits an hour in place
	r.close()
	if got := r.acks.result(t1); got != settledRequeue {
		t.Errorf("m1 settled with %q, want a requeue", got)
	}
	if got := r.acks.result(t2); got != settledRequeue {
		t.Errorf("m2 settled with %q, want a requeue: the drain had begun", got)
	}
	if got := h.runs(); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("ran %v, want [m1]", got)
	}
}

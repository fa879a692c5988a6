package worker

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// The keeper renews a running handler's claim, so another owner cannot
// take it however long the handler runs (the store's clock is moved by
// the test; the renewals are the keeper's).
func TestKeeperRenewsRunningClaim(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	entered, proceed := make(chan struct{}), make(chan struct{})
	r := newRig(t, rigOptions{dedupe: true, handler: HandlerFunc(func(ctx context.Context, d *Delivery) error {
		close(entered)
		<-proceed
		return nil
	})})
	r.store.SetClock(func() time.Time { return time.Unix(0, clock.Load()) })
	lease := r.pipe.intake.claims.lease
	keeper := r.pipe.intake.claims.keeper
	r.start()
	tag := r.deliver("m1", nil)
	<-entered
	for range 3 { // three times most of a lease: the claim would have lapsed twice
		clock.Add(int64(lease * 9 / 10))
		keeper.renew(context.Background())
	}
	if st, err := r.store.Claim(context.Background(), r.key("m1"), "other", lease); err != nil || st != dedupe.InProgress {
		t.Fatalf("another owner's claim during the run: %v, %v; want in_progress", st, err)
	}
	close(proceed)
	r.acks.waitSettled(t, 1)
	r.close()
	if got := r.acks.result(tag); got != settledAck {
		t.Fatalf("settled with %q, want ack", got)
	}
	if st, _ := r.store.Claim(context.Background(), r.key("m1"), "other", lease); st != dedupe.Done {
		t.Fatalf("after the run the message is %v, want done", st)
	}
	if n := len(keeper.held); n != 0 {
		t.Fatalf("the keeper still renews %d claims after the drain", n)
	}
}

// A claim that a renewal finds gone while its job waits for a handler is
// not run: its message goes round the first tier as in progress, without
// spending an attempt, and the round is counted on it.
func TestKeeperLostClaimIsNotRun(t *testing.T) {
	r, runs, proceed := m2WaitsClaimed(t)
	// The store loses m2's claim, another worker takes it, and the next
	// renewal finds it gone.
	if err := r.store.Release(context.Background(), r.key("m2"), ownerOf(t, r, "m2")); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.store.Claim(context.Background(), r.key("m2"), "other", time.Minute); st != dedupe.Claimed {
		t.Fatalf("other claim: %v", st)
	}
	r.pipe.intake.claims.keeper.renew(context.Background())
	close(proceed)
	r.acks.waitSettled(t, 2)
	r.close()
	if n := runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (m2's claim was lost)", n)
	}
	msgs := r.copies.messages
	if len(msgs) != 1 || r.copies.queues()[0] != "q.retry.1s" {
		t.Fatalf("copies %v, want one to q.retry.1s", r.copies.queues())
	}
	if got := msgs[0].Headers[HeaderInProgress]; got != int32(1) {
		t.Fatalf("%s = %v, want 1", HeaderInProgress, got)
	}
	if _, ok := msgs[0].Headers[HeaderError]; ok {
		t.Fatal("waiting for a claim wrote a failure on the message")
	}
}

// m2WaitsClaimed starts a one-handler rig whose handler holds m1 until
// proceed is closed, while m2 waits for the handler, claimed. runs counts
// handler runs.
func m2WaitsClaimed(t *testing.T) (r *rig, runs *atomic.Int32, proceed chan struct{}) {
	t.Helper()
	runs = new(atomic.Int32)
	entered := make(chan struct{})
	proceed = make(chan struct{})
	r = newRig(t, rigOptions{dedupe: true, concurrency: 1, handler: HandlerFunc(func(ctx context.Context, d *Delivery) error {
		runs.Add(1)
		if d.MessageID == "m1" {
			close(entered)
			<-proceed
		}
		return nil
	})})
	r.start()
	r.deliver("m1", nil)
	<-entered
	r.deliver("m2", nil)
	waitFor(t, func() bool { return r.store.Len() == 2 }) // m2 claimed, waiting
	return r, runs, proceed
}

// ownerOf is the owner of the claim the rig's keeper renews for id.
func ownerOf(t *testing.T, r *rig, id string) string {
	t.Helper()
	k := r.pipe.intake.claims.keeper
	k.mu.Lock()
	defer k.mu.Unlock()
	for h := range k.held {
		if h.key == r.key(id) {
			return h.owner
		}
	}
	t.Fatalf("no claim held for %s", id)
	return ""
}

// The warning for a claim found gone says whether it expired (not
// renewed for a lease) or was lost with the store (renewed in time), as
// the renewal that found it gone saw, however late the done mark comes.
func TestKeeperLostReason(t *testing.T) {
	k := newKeeper(dedupe.NewMemory(), time.Second, zap.NewNop(), &health{})
	now := time.Now()
	fresh := k.hold("k1", "o1", now.Add(-500*time.Millisecond))
	stale := k.hold("k2", "o2", now.Add(-5*time.Second))
	k.record([]*heldClaim{fresh, stale}, []error{dedupe.ErrNotOwner, dedupe.ErrNotOwner}, now)
	if got := k.lostReason(fresh); !strings.Contains(got, "lost with the store") || strings.Contains(got, "WARREN_DEDUPE_LEASE") {
		t.Errorf("renewed in time: %q", got)
	}
	if got := k.lostReason(stale); !strings.Contains(got, "expired") || !strings.Contains(got, "WARREN_DEDUPE_LEASE") {
		t.Errorf("not renewed for 5s: %q", got)
	}
}

// The pipeline's keeper renews on its own, in batches, and a renewal
// that hangs is cut off within a third of a lease, so the next round
// comes.
func TestKeeperRunsAndBoundsItsRounds(t *testing.T) {
	entered, proceed := make(chan struct{}), make(chan struct{})
	r := newRig(t, rigOptions{dedupe: true, lease: 300 * time.Millisecond, handler: HandlerFunc(func(ctx context.Context, d *Delivery) error {
		close(entered)
		<-proceed
		return nil
	})})
	r.start()
	r.deliver("m1", nil)
	<-entered
	waitFor(t, func() bool { return r.store.extends.Load() >= 3 })
	r.store.hang.Store(true)
	n := r.store.extends.Load()
	waitFor(t, func() bool { return r.store.extends.Load() >= n+3 }) // hanging rounds end
	r.store.hang.Store(false)
	close(proceed)
	r.acks.waitSettled(t, 1)
	r.close()
}

// A claim that lapsed while its job waited for a handler (no renewal got
// through) is confirmed before the job runs: the store says it is gone,
// so the message does not run and waits as in progress.
func TestKeeperConfirmsBeforeRunning(t *testing.T) {
	r, runs, proceed := m2WaitsClaimed(t)
	// m2's claim lapsed (not renewed for two leases) and another worker
	// took it; no renewal round noticed.
	k := r.pipe.intake.claims.keeper
	owner := ownerOf(t, r, "m2")
	k.mu.Lock()
	for h := range k.held {
		if h.key == r.key("m2") {
			h.renewed = time.Now().Add(-2 * k.lease)
		}
	}
	k.mu.Unlock()
	if err := r.store.Release(context.Background(), r.key("m2"), owner); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.store.Claim(context.Background(), r.key("m2"), "other", time.Minute); st != dedupe.Claimed {
		t.Fatalf("other claim: %v", st)
	}
	close(proceed)
	r.acks.waitSettled(t, 2)
	r.close()
	if n := runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (m2's claim had lapsed)", n)
	}
	if q := r.copies.queues(); len(q) != 1 || q[0] != "q.retry.1s" {
		t.Fatalf("copies %v, want one in progress to q.retry.1s", q)
	}
}

// An in-progress copy whose holder keeps its claim past a parked lease
// waits on the first tier while a dead holder's lease may run out, then
// climbs the tiers.
func TestInProgressRoundsClimbTheTiers(t *testing.T) {
	r := newRig(t, rigOptions{dedupe: true, handler: failing(nil), lease: 2 * time.Second})
	lease := r.pipe.intake.claims.lease
	if _, err := r.store.Claim(context.Background(), r.key("m1"), "holder", time.Hour); err != nil {
		t.Fatal(err)
	}
	r.start()
	grace := int(lease/time.Second) + 1 // rounds of the 1s tier covering the lease, and one more
	rounds := []int32{0, int32(grace - 1), int32(grace)}
	for _, n := range rounds {
		r.deliver("m1", map[string]any{HeaderInProgress: n})
	}
	r.acks.waitSettled(t, len(rounds))
	r.close()
	want := []string{"q.retry.10s", "q.retry.1s", "q.retry.1s"}
	got := r.copies.queues()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("copies went to %v, want %v", got, want)
	}
	// Each copy carries its round, one more than it came with.
	var seen []int32
	for _, m := range r.copies.messages {
		n, _ := m.Headers[HeaderInProgress].(int32)
		seen = append(seen, n)
	}
	slices.Sort(seen)
	if wantRounds := []int32{1, int32(grace), int32(grace + 1)}; !slices.Equal(seen, wantRounds) {
		t.Fatalf("rounds on the copies %v, want %v", seen, wantRounds)
	}
}

// txOnly is a custom store with a transactional done mark but no batch
// calls.
type txOnly struct {
	dedupe.Store
	committed atomic.Bool
}

func (s *txOnly) MarkDoneWith(ctx context.Context, key, owner string, ttl time.Duration, writes func(redis.Pipeliner) error) error {
	if err := writes(nil); err != nil {
		return err
	}
	if err := s.MarkDone(ctx, key, owner, ttl); err != nil {
		return err
	}
	s.committed.Store(true)
	return nil
}

// A store without batch calls keeps its transactional done mark: the
// adapter that gives it batch calls does not hide CommitWithDone.
func TestCommitWithDoneOnAStoreWithoutBatchCalls(t *testing.T) {
	store := &txOnly{Store: &struct{ dedupe.Store }{dedupe.NewMemory()}}
	h := HandlerFunc(func(ctx context.Context, d *Delivery) error {
		return CommitWithDone(ctx, func(redis.Pipeliner) error { return nil })
	})
	d := &Delivery{Attempt: 1, IdempotencyKey: dedupe.Key("test", "q", "m1")}
	ex := Execute(context.Background(), h, d, ExecuteOptions{Store: store})
	if ex.Outcome != OutcomeAck || !store.committed.Load() {
		t.Fatalf("%+v (%v), committed %v; want ack and a commit", ex.Decision, ex.Err, store.committed.Load())
	}
}

// The in-progress count is read from any integer type, as another client
// or a tool that encodes the headers anew may write it, and a copy counts
// on from it.
func TestInProgressRoundsReadAnyInteger(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int32
	}{{nil, 0}, {int32(3), 3}, {int64(4), 4}, {uint8(5), 5}, {int16(2), 2}, {"3", 0}, {int64(-7), 0}, {uint64(1 << 40), 1<<31 - 2}} {
		if got := inProgressRounds(map[string]any{HeaderInProgress: c.v}); got != c.want {
			t.Errorf("%T %v: %d, want %d", c.v, c.v, got, c.want)
		}
	}
	c := copier{queue: "q"}
	bd := &broker.Delivery{Message: broker.Message{Headers: map[string]any{HeaderInProgress: int64(2)}}}
	m := c.retryMessage(bd, &Delivery{Attempt: 1}, result{Decision: Decision{Outcome: OutcomeRetry, Kind: KindInProgress}})
	if got := m.Headers[HeaderInProgress]; got != int32(3) {
		t.Errorf("the copy's count is %T %v, want int32 3", got, got)
	}
}

package dedupe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
)

// txStore is a Redis store on the test server, with a key prefix of the
// test's own, deleted when it ends.
func txStore(t *testing.T) (*dedupe.RedisStore, redis.UniversalClient, string) {
	t.Helper()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, rdb, prefix) })
	s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb, prefix
}

func TestMarkDoneWithCommitsAtomically(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := txStore(t)
	ctx := context.Background()
	key := dedupe.Key(prefix, "q", "m1")
	effect := dedupe.SameSlot(key, prefix+":effect")
	if st, err := s.Claim(ctx, key, "a", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v %v", st, err)
	}
	incr := func(p redis.Pipeliner) error { p.Incr(ctx, effect); return nil }
	// Someone else's claim: nothing is written.
	if err := s.MarkDoneWith(ctx, key, "b", time.Minute, incr); !errors.Is(err, dedupe.ErrNotOwner) {
		t.Fatalf("foreign owner: %v, want ErrNotOwner", err)
	}
	if n, _ := rdb.Get(ctx, effect).Int(); n != 0 {
		t.Fatalf("effect written by a non-owner: %d", n)
	}
	if err := s.MarkDoneWith(ctx, key, "a", time.Minute, incr); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Get(ctx, effect).Int(); n != 1 {
		t.Fatalf("effect = %d, want 1", n)
	}
	if st, _ := s.Claim(ctx, key, "c", time.Minute); st != dedupe.Done {
		t.Fatalf("after MarkDoneWith the key is %v, want done", st)
	}
	// Done already (as after a lost reply): a second commit writes
	// nothing and succeeds.
	if err := s.MarkDoneWith(ctx, key, "a", time.Minute, incr); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	if n, _ := rdb.Get(ctx, effect).Int(); n != 1 {
		t.Fatalf("effect = %d after a second commit, want 1", n)
	}
	// A failing writes function aborts everything.
	key2 := dedupe.Key(prefix, "q", "m2")
	_, _ = s.Claim(ctx, key2, "a", time.Minute)
	boom := errors.New("boom")
	if err := s.MarkDoneWith(ctx, key2, "a", time.Minute, func(redis.Pipeliner) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("writes error: %v", err)
	}
	if st, _ := s.Claim(ctx, key2, "a", time.Minute); st != dedupe.Claimed {
		t.Fatalf("aborted commit changed the claim: %v", st)
	}
}

func TestSameSlot(t *testing.T) {
	t.Parallel()
	key := dedupe.Key("p", "q", "id")
	got := dedupe.SameSlot(key, "effects")
	if got != "effects:{q:id}" {
		t.Fatalf("SameSlot = %q", got)
	}
}

// The worker's own lease renewal (a PEXPIRE on the claim) between the
// transaction's WATCH and its EXEC must not pass for a lost claim: the
// commit goes through.
func TestMarkDoneWithSurvivesOwnRenewal(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := txStore(t)
	ctx := context.Background()
	key := dedupe.Key(prefix, "q", "m1")
	effect := dedupe.SameSlot(key, prefix+":effect")
	if st, err := s.Claim(ctx, key, "me", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v %v", st, err)
	}
	renewed := 0
	err := s.MarkDoneWith(ctx, key, "me", time.Minute, func(p redis.Pipeliner) error {
		if renewed == 0 { // the keeper renews, on another connection, now
			if err := s.ExtendAll(ctx, []dedupe.Ref{{Key: key, Owner: "me"}}, time.Minute)[0]; err != nil {
				t.Fatal(err)
			}
		}
		renewed++
		p.Incr(ctx, effect)
		return nil
	})
	if err != nil {
		t.Fatalf("commit after the owner's own renewal: %v", err)
	}
	if n, _ := rdb.Get(ctx, effect).Int(); n != 1 {
		t.Fatalf("effect = %d, want 1", n)
	}
	if st, _ := s.Claim(ctx, key, "other", time.Minute); st != dedupe.Done {
		t.Fatalf("the key is %v after the commit, want done", st)
	}
}

// A writes function's own error is the handler's, not the store's; a
// write that fails inside EXEC leaves the done mark committed (MULTI/EXEC
// does not roll back) and says so.
func TestMarkDoneWithErrorsAreTheHandlers(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := txStore(t)
	ctx := context.Background()

	key := dedupe.Key(prefix, "q", "m1")
	_, _ = s.Claim(ctx, key, "me", time.Minute)
	invalid := errors.New("invalid amount")
	err := s.MarkDoneWith(ctx, key, "me", time.Minute, func(redis.Pipeliner) error { return invalid })
	var we *dedupe.WritesError
	if !errors.Is(err, invalid) || !errors.As(err, &we) || dedupe.Unavailable(err) {
		t.Fatalf("writes function error: %v (Unavailable %v), want a WritesError that is not Unavailable", err, dedupe.Unavailable(err))
	}

	key2 := dedupe.Key(prefix, "q", "m2")
	hash, counter := dedupe.SameSlot(key2, prefix+":hash"), dedupe.SameSlot(key2, prefix+":counter")
	rdb.HSet(ctx, hash, "f", "v")
	_, _ = s.Claim(ctx, key2, "me", time.Minute)
	err = s.MarkDoneWith(ctx, key2, "me", time.Minute, func(p redis.Pipeliner) error {
		p.Incr(ctx, counter)
		p.Incr(ctx, hash) // WRONGTYPE when EXEC runs it
		return nil
	})
	var pe *dedupe.PartialCommitError
	if !errors.As(err, &pe) || dedupe.Unavailable(err) {
		t.Fatalf("a write failing in EXEC: %v (Unavailable %v), want a PartialCommitError that is not Unavailable", err, dedupe.Unavailable(err))
	}
	if st, _ := s.Claim(ctx, key2, "other", time.Minute); st != dedupe.Done {
		t.Fatalf("the key is %v, want done: EXEC committed the mark", st)
	}
	if n, _ := rdb.Get(ctx, counter).Int(); n != 1 {
		t.Fatalf("the other write: %d, want 1", n)
	}
}

// A transaction Redis discards because it refused a command as it queued
// it (EXECABORT) wrote nothing: a refusal that says the server cannot
// serve now (out of memory) is the store being unavailable, so the
// message waits for it; a command of the handler's that Redis rejects is
// the handler's failure. A read of a missing key in the writes is no
// failure.
func TestMarkDoneWithQueueRefusals(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := txStore(t)
	ctx := context.Background()

	key := dedupe.Key(prefix, "q", "bad-command")
	_, _ = s.Claim(ctx, key, "me", time.Minute)
	err := s.MarkDoneWith(ctx, key, "me", time.Minute, func(p redis.Pipeliner) error {
		p.Do(ctx, "incr") // no key: refused as it is queued
		return nil
	})
	var we *dedupe.WritesError
	if !errors.As(err, &we) || dedupe.Unavailable(err) {
		t.Fatalf("a command refused as queued: %v (Unavailable %v), want a WritesError", err, dedupe.Unavailable(err))
	}
	if st, _ := s.Claim(ctx, key, "me", time.Minute); st != dedupe.Claimed {
		t.Fatalf("the discarded transaction changed the claim: %v", st)
	}

	key = dedupe.Key(prefix, "q", "reads")
	counter := dedupe.SameSlot(key, prefix+":counter")
	_, _ = s.Claim(ctx, key, "me", time.Minute)
	if err := s.MarkDoneWith(ctx, key, "me", time.Minute, func(p redis.Pipeliner) error {
		p.Get(ctx, dedupe.SameSlot(key, prefix+":missing"))
		p.Incr(ctx, counter)
		return nil
	}); err != nil {
		t.Fatalf("a read of a missing key in the writes: %v", err)
	}
	if n, _ := rdb.Get(ctx, counter).Int(); n != 1 {
		t.Fatalf("counter = %d, want 1", n)
	}

	// A key the ACL user may not write, on a server of the test's own:
	// the handler's failure, since waiting would not change it.
	srv := testenv.StartRedis(t)
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "limited", "on", ">limited-pass", "~"+prefix+"*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	limitedClient := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "limited", Password: "limited-pass"})
	t.Cleanup(func() { _ = limitedClient.Close() })
	limited, err := dedupe.NewRedis(limitedClient, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	key = dedupe.Key(prefix, "q", "acl")
	if st, err := limited.Claim(ctx, key, "me", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim as the limited user: %v %v", st, err)
	}
	err = limited.MarkDoneWith(ctx, key, "me", time.Minute, func(p redis.Pipeliner) error {
		p.Incr(ctx, dedupe.SameSlot(key, "elsewhere"))
		return nil
	})
	if !errors.As(err, &we) || dedupe.Unavailable(err) {
		t.Fatalf("a write the ACL refuses: %v (Unavailable %v), want a WritesError", err, dedupe.Unavailable(err))
	}

	// Out of memory.
	oom, err := dedupe.NewRedis(srv.Client(), dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	key = dedupe.Key(prefix, "q", "oom")
	if st, err := oom.Claim(ctx, key, "me", time.Minute); err != nil || st != dedupe.Claimed {
		t.Fatalf("claim: %v %v", st, err)
	}
	if err := srv.Client().ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	err = oom.MarkDoneWith(ctx, key, "me", time.Minute, func(p redis.Pipeliner) error {
		p.Incr(ctx, dedupe.SameSlot(key, prefix+":counter"))
		return nil
	})
	if err == nil || !dedupe.Unavailable(err) {
		t.Fatalf("a commit refused for memory: %v (Unavailable %v), want the store unavailable", err, dedupe.Unavailable(err))
	}
}

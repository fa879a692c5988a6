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

func TestMarkDoneWithCommitsAtomically(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, rdb, prefix) })
	s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
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

package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/dedupe/dedupetest"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestRedisPipelinedCallsUnderLoad claims, extends and marks done many
// keys from many goroutines at once, so calls share pipelines, and checks
// every answer; some callers give up early (their context ends) without
// stranding the others.
func TestRedisPipelinedCallsUnderLoad(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, rdb, prefix) })
	s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < each; i++ {
				key := dedupe.Key(prefix, "q", fmt.Sprintf("%d-%d", g, i))
				if i%10 == 9 {
					// A caller that gives up at once must not hurt others.
					dead, cancel := context.WithCancel(ctx)
					cancel()
					_, _ = s.Claim(dead, key+"x", "o", time.Minute)
				}
				st, err := s.Claim(ctx, key, "o", time.Minute)
				if err != nil || st != dedupe.Claimed {
					errs <- fmt.Errorf("claim %s: %v %v", key, st, err)
					continue
				}
				if err := s.Extend(ctx, key, "o", time.Minute); err != nil {
					errs <- fmt.Errorf("extend %s: %v", key, err)
				}
				if err := s.MarkDone(ctx, key, "o", time.Minute); err != nil {
					errs <- fmt.Errorf("done %s: %v", key, err)
				}
				if st, err := s.Claim(ctx, key, "p", time.Minute); err != nil || st != dedupe.Done {
					errs <- fmt.Errorf("reclaim %s: %v %v", key, st, err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRedisBatchConformance runs the batch suite on the shared Redis.
func TestRedisBatchConformance(t *testing.T) {
	dedupetest.RunBatch(t, func(t *testing.T) dedupe.BatchStore {
		rdb := testenv.RedisClient(t)
		testenv.DeleteRedisPrefix(t, rdb, dedupetest.KeyPrefix(t))
		s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestMarkDoneAll marks a batch done, with one foreign owner and one bad
// request among them, on both stores.
func TestMarkDoneAll(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, rdb, prefix) })
	redisStore, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]dedupe.BatchStore{"redis": redisStore, "memory": dedupe.NewMemory()} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			var claims, reqs []dedupe.Ref
			for i := 0; i < 300; i++ {
				key := dedupe.Key(prefix+name, "q", fmt.Sprint(i))
				claims = append(claims, dedupe.Ref{Key: key, Owner: "o"})
				owner := "o"
				if i == 7 {
					owner = "intruder"
				}
				reqs = append(reqs, dedupe.Ref{Key: key, Owner: owner})
			}
			for i, r := range s.ClaimAll(ctx, claims, time.Minute) {
				if r.Err != nil || r.Status != dedupe.Claimed {
					t.Fatalf("ClaimAll %d: %v %v", i, r.Status, r.Err)
				}
			}
			others := append([]dedupe.Ref(nil), claims[:5]...)
			for i := range others {
				others[i].Owner = "other"
			}
			others = append(others, dedupe.Ref{Key: "k", Owner: ""})
			for i, r := range s.ClaimAll(ctx, others, time.Minute) {
				switch {
				case i < 5 && (r.Err != nil || r.Status != dedupe.InProgress):
					t.Errorf("second ClaimAll %d: %v %v, want in progress", i, r.Status, r.Err)
				case i == 5 && r.Err == nil:
					t.Error("ClaimAll accepted an empty owner")
				}
			}
			reqs = append(reqs, dedupe.Ref{Key: "", Owner: "o"})
			errs := s.MarkDoneAll(ctx, reqs, time.Minute)
			for i, err := range errs {
				switch {
				case i == 7 && !errors.Is(err, dedupe.ErrNotOwner):
					t.Errorf("foreign owner: %v, want ErrNotOwner", err)
				case i == 300 && err == nil:
					t.Error("empty key accepted")
				case i != 7 && i != 300 && err != nil:
					t.Errorf("request %d: %v", i, err)
				}
			}
			// Sent again, as after a lost reply: done keys count as
			// success, the foreign owner is still refused.
			for i, err := range s.MarkDoneAll(ctx, reqs[:300], time.Minute) {
				if (i == 7) != errors.Is(err, dedupe.ErrNotOwner) || (i != 7 && err != nil) {
					t.Errorf("second MarkDoneAll, request %d: %v", i, err)
				}
			}
			for i := 0; i < 300; i++ {
				st, _ := s.Claim(ctx, reqs[i].Key, "p", time.Minute)
				if want := dedupe.Done; i != 7 && st != want {
					t.Errorf("key %d is %v after MarkDoneAll", i, st)
				}
			}
		})
	}
}

// TestMarkDoneAllAfterScriptFlush: a server that lost its script cache
// (a restart, SCRIPT FLUSH) still takes batched done marks.
func TestMarkDoneAllAfterScriptFlush(t *testing.T) {
	s, rdb, prefix := sharedRedisStore(t)
	ctx := context.Background()
	reqs := claimedRefs(t, s, prefix, 10)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i, err := range s.MarkDoneAll(ctx, reqs, time.Minute) {
		if err != nil {
			t.Errorf("MarkDoneAll %d after SCRIPT FLUSH: %v", i, err)
		}
	}
	wantDone(t, s, reqs, -1)
}

// TestMarkDoneAllWrongTypeFailsAlone: a key that holds another type than
// a string fails its own done mark, not the rest of the batch.
func TestMarkDoneAllWrongTypeFailsAlone(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := sharedRedisStore(t)
	ctx := context.Background()
	reqs := claimedRefs(t, s, prefix, 5)
	if err := rdb.Del(ctx, reqs[2].Key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.RPush(ctx, reqs[2].Key, "x").Err(); err != nil {
		t.Fatal(err)
	}
	for i, err := range s.MarkDoneAll(ctx, reqs, time.Minute) {
		switch {
		case i == 2 && !errors.Is(err, dedupe.ErrForeignValue):
			t.Errorf("the list key: %v, want ErrForeignValue", err)
		case i != 2 && err != nil:
			t.Errorf("request %d: %v", i, err)
		}
	}
	wantDone(t, s, reqs, 2)
}

// TestMarkDoneAllThroughOneEndpointOfACluster: a single-node client in
// front of keys of many slots (here a cluster node that owns every slot,
// as a proxy in front of a sharded Redis would look) refuses one call on
// many keys; the done marks go one call per hash slot instead.
func TestMarkDoneAllThroughOneEndpointOfACluster(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	if err := rdb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := rdb.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster node is not ready: %v %q", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	slotsMatchServer(t, rdb)
	s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		reqs := claimedRefs(t, s, fmt.Sprint("p", round), 10)
		for i, err := range s.MarkDoneAll(ctx, reqs, time.Minute) {
			if err != nil {
				t.Errorf("round %d: MarkDoneAll %d: %v", round, i, err)
			}
		}
		wantDone(t, s, reqs, -1)
	}
}

// sharedRedisStore is a RedisStore on the shared test Redis with a key
// prefix of the test's own, whose keys are deleted when t ends.
func sharedRedisStore(t *testing.T) (*dedupe.RedisStore, redis.UniversalClient, string) {
	t.Helper()
	rdb := testenv.RedisClient(t)
	prefix := testenv.Name(t)
	testenv.DeleteRedisPrefix(t, rdb, prefix)
	s, err := dedupe.NewRedis(rdb, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb, prefix
}

// claimedRefs claims n fresh keys under prefix for owner "o".
func claimedRefs(t *testing.T, s dedupe.BatchStore, prefix string, n int) []dedupe.Ref {
	t.Helper()
	var refs []dedupe.Ref
	for i := 0; i < n; i++ {
		refs = append(refs, dedupe.Ref{Key: dedupe.Key(prefix, "q", fmt.Sprint(i)), Owner: "o"})
	}
	for i, r := range s.ClaimAll(context.Background(), refs, time.Minute) {
		if r.Err != nil || r.Status != dedupe.Claimed {
			t.Fatalf("ClaimAll %d: %v %v", i, r.Status, r.Err)
		}
	}
	return refs
}

// wantDone fails t unless every key of refs but the one at skip is done.
func wantDone(t *testing.T, s dedupe.Store, refs []dedupe.Ref, skip int) {
	t.Helper()
	for i, r := range refs {
		if i == skip {
			continue
		}
		if st, err := s.Claim(context.Background(), r.Key, "p", time.Minute); err != nil || st != dedupe.Done {
			t.Errorf("key %d is %v (%v), want done", i, st, err)
		}
	}
}

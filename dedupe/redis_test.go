package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/dedupe/dedupetest"
)

// redisAddr is the test server: WARREN_TEST_REDIS_ADDR or 127.0.0.1:6379.
func redisAddr() string {
	if a := os.Getenv("WARREN_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// newRedisClient connects to the test server and closes the client when
// t ends. It fails t if the server does not answer: these tests need a
// real Redis, and skipping them would let a run pass without testing the
// Redis store at all.
func newRedisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := redisAddr()
	opts, err := dedupe.ParseRedisURL("redis://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("the Redis store tests need a Redis server at %s (start one, or set WARREN_TEST_REDIS_ADDR to its host:port): %v", addr, err)
	}
	return c
}

// trackingStore records the keys it is used with, so a test can delete them.
type trackingStore struct {
	dedupe.Store
	mu   sync.Mutex
	keys map[string]struct{}
}

func (s *trackingStore) track(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = struct{}{}
}

func (s *trackingStore) Claim(ctx context.Context, key, owner string, lease time.Duration) (dedupe.Status, error) {
	s.track(key)
	return s.Store.Claim(ctx, key, owner, lease)
}

func (s *trackingStore) Extend(ctx context.Context, key, owner string, lease time.Duration) error {
	s.track(key)
	return s.Store.Extend(ctx, key, owner, lease)
}

func (s *trackingStore) MarkDone(ctx context.Context, key, owner string, ttl time.Duration) error {
	s.track(key)
	return s.Store.MarkDone(ctx, key, owner, ttl)
}

func (s *trackingStore) Release(ctx context.Context, key, owner string) error {
	s.track(key)
	return s.Store.Release(ctx, key, owner)
}

// newRedisStore returns a store on the test server whose keys are deleted
// when t ends.
func newRedisStore(t *testing.T) (*trackingStore, redis.UniversalClient) {
	return newRedisStoreWith(t, dedupe.RedisConfig{})
}

func newRedisStoreWith(t *testing.T, cfg dedupe.RedisConfig) (*trackingStore, redis.UniversalClient) {
	t.Helper()
	c := newRedisClient(t)
	s, err := dedupe.NewRedis(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &trackingStore{Store: s, keys: make(map[string]struct{})}
	t.Cleanup(func() { deleteKeys(t, c, ts.keys) })
	return ts, c
}

func deleteKeys(t *testing.T, c redis.UniversalClient, keys map[string]struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for k := range keys {
		if err := c.Del(ctx, k).Err(); err != nil {
			t.Errorf("delete %q: %v", k, err)
		}
	}
}

// testKey returns a key of its own for t.
func testKey(t *testing.T) string {
	return dedupe.Key(fmt.Sprintf("dedupe-test:%s:%016x", t.Name(), rand.Uint64()), "q", "id")
}

func TestRedisConformance(t *testing.T) {
	newRedisClient(t) // fail early if there is no server
	dedupetest.Run(t, func(t *testing.T) (dedupe.Store, dedupetest.Clock) {
		s, _ := newRedisStore(t)
		return s, dedupetest.SleepClock{}
	})
}

// TestRedisConformanceNoPipelining runs the suite with every call sent on
// its own.
func TestRedisConformanceNoPipelining(t *testing.T) {
	newRedisClient(t)
	dedupetest.Run(t, func(t *testing.T) (dedupe.Store, dedupetest.Clock) {
		s, _ := newRedisStoreWith(t, dedupe.RedisConfig{NoPipelining: true})
		return s, dedupetest.SleepClock{}
	})
}

func TestRedisStoredValues(t *testing.T) {
	s, c := newRedisStore(t)
	ctx, k := t.Context(), testKey(t)
	// A lease is stored in whole milliseconds, rounded up: 1.5ms past a
	// minute is 60002ms. (A lease of a few ms would expire before it can
	// be read on a loaded machine.)
	if _, err := s.Claim(ctx, k, "owner-1", time.Minute+1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	wantValue(t, c, k, "p:owner-1", time.Minute+2*time.Millisecond)
	// A lease under a millisecond rounds up to one: PX 0 would be refused.
	if _, err := s.Claim(ctx, testKey(t)+"-short", "owner-1", time.Microsecond); err != nil {
		t.Fatalf("claim with a 1µs lease: %v", err)
	}
	if _, err := s.Claim(ctx, k, "owner-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	wantValue(t, c, k, "p:owner-1", time.Minute)
	if err := s.MarkDone(ctx, k, "owner-1", time.Hour); err != nil {
		t.Fatal(err)
	}
	wantValue(t, c, k, "d", time.Hour)
}

// wantValue checks the value of key and that its TTL is in (0, maxTTL].
func wantValue(t *testing.T, c redis.UniversalClient, key, value string, maxTTL time.Duration) {
	t.Helper()
	ctx := t.Context()
	if got, err := c.Get(ctx, key).Result(); err != nil || got != value {
		t.Fatalf("GET %q = %q, %v; want %q", key, got, err, value)
	}
	if ttl, err := c.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > maxTTL {
		t.Fatalf("PTTL %q = %s, %v; want in (0, %s]", key, ttl, err, maxTTL)
	}
}

// A held done mark is a SET XX GET: stored with its TTL like any mark,
// without comparing the owner (here over another owner's claim, which a
// held request promises is not there), but not on a key that is gone;
// requests that are not held in the same call keep the check.
func TestRedisMarkDoneAllHeld(t *testing.T) {
	s, c := newRedisStore(t)
	rs := s.Store.(*dedupe.RedisStore)
	ctx := t.Context()
	key := func(name string) string { return testKey(t) + "-" + name }
	mine, theirs, checked, gone, done, foreign, list := key("mine"), key("theirs"), key("checked"), key("gone"), key("done"),
		key("foreign"), key("list")
	for _, k := range []string{mine, theirs, checked, done} {
		owner := "a"
		if k == theirs || k == checked {
			owner = "b"
		}
		if st, err := s.Claim(ctx, k, owner, time.Minute); err != nil || st != dedupe.Claimed {
			t.Fatalf("claim %q: %v, %v", k, st, err)
		}
	}
	if err := s.MarkDone(ctx, done, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, foreign, "not ours", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.LPush(ctx, list, "x").Err(); err != nil {
		t.Fatal(err)
	}
	s.track(foreign)
	s.track(list)
	errs := rs.MarkDoneAll(ctx, []dedupe.Ref{
		{Key: mine, Owner: "a", Held: true},
		{Key: theirs, Owner: "a", Held: true},
		{Key: checked, Owner: "a"},
		{Key: "", Owner: "a", Held: true},
		{Key: gone, Owner: "a", Held: true},
		{Key: done, Owner: "a", Held: true},
		{Key: foreign, Owner: "a", Held: true},
		{Key: list, Owner: "a", Held: true},
	}, time.Hour)
	for i, want := range []struct {
		is  error // nil: no error
		not error
	}{
		{},
		{is: dedupe.ErrMarkedOver},
		{is: dedupe.ErrNotOwner, not: dedupe.ErrMarkedOver},
		{not: dedupe.ErrNotOwner},
		{is: dedupe.ErrNotOwner, not: dedupe.ErrMarkedOver},
		{},
		{is: dedupe.ErrForeignValue},
		{is: dedupe.ErrForeignValue},
	} {
		err := errs[i]
		switch {
		case i == 3 && err == nil:
			t.Errorf("request %d (an empty key): no error, want an argument error", i)
		case i != 3 && want.is == nil && err != nil:
			t.Errorf("request %d: %v, want no error", i, err)
		case want.is != nil && !errors.Is(err, want.is):
			t.Errorf("request %d: %v, want %v", i, err, want.is)
		case want.not != nil && errors.Is(err, want.not):
			t.Errorf("request %d: %v, want not %v", i, err, want.not)
		}
	}
	if !errors.Is(errs[1], dedupe.ErrNotOwner) {
		t.Errorf("ErrMarkedOver %v does not wrap ErrNotOwner", errs[1])
	}
	wantValue(t, c, mine, "d", time.Hour)
	wantValue(t, c, theirs, "d", time.Hour)
	wantValue(t, c, checked, "p:b", time.Minute)
	wantValue(t, c, done, "d", time.Hour)
	wantValue(t, c, foreign, "d", time.Hour)
	if n, err := c.Exists(ctx, gone).Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS of the gone key = %d, %v; want 0", n, err)
	}
	if got, err := c.LRange(ctx, list, 0, -1).Result(); err != nil || len(got) != 1 || got[0] != "x" {
		t.Fatalf("the list key holds %v, %v; want it unchanged", got, err)
	}
}

func TestRedisForeignValue(t *testing.T) {
	s, c := newRedisStore(t)
	ctx, k := t.Context(), testKey(t)
	if err := c.Set(ctx, k, "not ours", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	s.track(k)
	_, err := s.Claim(ctx, k, "a", time.Minute)
	if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("dedupe: claim %q: ", k)) {
		t.Fatalf("Claim of a foreign value: error %v", err)
	}
	if err := s.Release(ctx, k, "a"); !errors.Is(err, dedupe.ErrNotOwner) {
		t.Fatalf("Release of a foreign value: error %v, want ErrNotOwner", err)
	}
	if got, _ := c.Get(ctx, k).Result(); got != "not ours" {
		t.Fatalf("foreign value changed to %q", got)
	}
}

func TestRedisWrongType(t *testing.T) {
	s, c := newRedisStore(t)
	ctx, k := t.Context(), testKey(t)
	if err := c.LPush(ctx, k, "x").Err(); err != nil {
		t.Fatal(err)
	}
	s.track(k)
	_, err := s.Claim(ctx, k, "a", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") || !strings.HasPrefix(err.Error(), "dedupe: claim ") {
		t.Fatalf("Claim of a list: error %v, want a wrapped WRONGTYPE error", err)
	}
}

func TestNewRedisRejectsBadArguments(t *testing.T) {
	if _, err := dedupe.NewRedis(nil, dedupe.RedisConfig{}); err == nil {
		t.Error("NewRedis(nil) succeeded")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := dedupe.NewRedis(c, dedupe.RedisConfig{OpTimeout: -time.Second}); err == nil {
		t.Error("NewRedis with a negative op timeout succeeded")
	}
}

func TestRedisErrorsHideSecrets(t *testing.T) {
	const password = "hunter2-very-secret"
	ln := listen(t, false)
	opts, err := dedupe.ParseRedisURL("redis://worker:" + password + "@" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close() // nothing answers there now
	c := redis.NewUniversalClient(opts)
	defer c.Close()
	s, err := dedupe.NewRedis(c, dedupe.RedisConfig{OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	_, claimErr := s.Claim(ctx, "k", "a", time.Minute)
	for _, err := range []error{claimErr, s.MarkDone(ctx, "k", "a", time.Minute), s.Ping(ctx)} {
		if err == nil || strings.Contains(err.Error(), password) {
			t.Errorf("error %v: want an error without the password", err)
		}
	}
	if claimErr == nil || !strings.HasPrefix(claimErr.Error(), `dedupe: claim "k": `) {
		t.Errorf("Claim error %v does not say what was done", claimErr)
	}
}

func TestRedisOpTimeout(t *testing.T) {
	ln := listen(t, true) // accepts, never answers
	opts, err := dedupe.ParseRedisURL("redis://" + ln.Addr().String() + "?max_retries=-1")
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewUniversalClient(opts)
	defer c.Close()
	s, err := dedupe.NewRedis(c, dedupe.RedisConfig{OpTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Claim(t.Context(), "k", "a", time.Minute)
	if err == nil {
		t.Fatal("Claim on a silent server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Claim took %s with a 100ms op timeout", d)
	}
}

// listen opens a TCP listener on localhost that is closed when t ends.
// With hold, it accepts connections and keeps them open without a reply.
func listen(t *testing.T, hold bool) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	if hold {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	return ln
}

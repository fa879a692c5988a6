package flow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter defaults.
const (
	// DefaultLease is how long a concurrency slot holds without being
	// extended. Keep renews a held slot every third of it, so a live
	// handler keeps its slot however long it runs, and a dead worker's
	// slots are free again within it.
	DefaultLease = 5 * time.Second
	// DefaultPrefix is the first part of every limiter key.
	DefaultPrefix = "warren"
)

// Limit is what one key may do across every worker sharing the Redis.
type Limit struct {
	// Concurrency is how many holders a key may have at once. 0 means
	// no bound.
	Concurrency int
	// Rate is how many slots a key may be given per Period (a sliding
	// window). 0 means no bound.
	Rate int
	// Period is the window of Rate. Required when Rate is set.
	Period time.Duration
}

// Validate checks l.
func (l Limit) Validate() error {
	switch {
	case l.Concurrency < 0:
		return fmt.Errorf("limit: concurrency must not be negative, got %d", l.Concurrency)
	case l.Rate < 0:
		return fmt.Errorf("limit: rate must not be negative, got %d", l.Rate)
	case l.Rate > 0 && l.Period < time.Millisecond:
		return fmt.Errorf("limit: a rate needs a period of at least 1ms, got %s", l.Period)
	}
	return nil
}

// Zero reports whether l bounds nothing.
func (l Limit) Zero() bool { return l.Concurrency == 0 && l.Rate == 0 }

// LimiterConfig configures a Limiter.
type LimiterConfig struct {
	// Prefix is the first part of every key. "" means DefaultPrefix.
	Prefix string
	// Lease is how long a concurrency slot holds unless extended. 0
	// means DefaultLease.
	Lease time.Duration
}

// Limiter keeps per-key concurrency and rate limits in Redis. Each
// decision is one Lua script run on Redis's clock, so limits hold across
// a fleet; concurrency slots are leases, so a dead worker's slots come
// back. A key's two sets share a hash slot (Redis Cluster works).
type Limiter struct {
	client redis.UniversalClient
	prefix string
	lease  time.Duration
}

// NewLimiter returns a limiter on client.
func NewLimiter(client redis.UniversalClient, cfg LimiterConfig) (*Limiter, error) {
	if client == nil {
		return nil, errors.New("limiter: a Redis client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 3*time.Millisecond {
		return nil, fmt.Errorf("limiter: lease must be at least 3ms, got %s", cfg.Lease)
	}
	return &Limiter{client: client, prefix: cfg.Prefix, lease: cfg.Lease}, nil
}

// Refusals: which limit a key is over.
const (
	OverConcurrency = "concurrency"
	OverRate        = "rate"
)

// Slot is the answer of Acquire: held, or refused with the limit the key
// is over and how long until the rate window has room.
type Slot struct {
	// Over is "" when the slot is held, else OverConcurrency or OverRate.
	Over string
	// RetryIn is, for a refusal, when a slot may be free: for the rate,
	// when the oldest start leaves the window; for concurrency, when the
	// oldest lease runs out unless extended (usually a holder finishes
	// sooner).
	RetryIn time.Duration

	l      *Limiter
	conc   string // the key's set of holders; "" without a concurrency limit
	holder string
}

// Held reports whether the slot was given.
func (s *Slot) Held() bool { return s.Over == "" }

// acquireScript takes a slot of KEYS[1] (holders, scored by lease end)
// and KEYS[2] (starts in the window) when both have room, else says which
// is full and when it has room.
// ARGV: holder, concurrency, lease ms, rate, period ms.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local conc, lease, rate, period = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= conc then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(first[2]) - now}
  end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - period)
  if redis.call('ZCARD', KEYS[2]) >= rate then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tonumber(first[2]) + period - now}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], period)
end
if conc > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease)
end
return {0, 0}
`)

// extendScript moves a holder's lease end to now + lease while it still
// holds the slot. ARGV: holder, lease ms. Returns 1 when it held it.
var extendScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

// Acquire asks for a slot of key within scope (e.g. a queue) under lim.
// A held slot with a concurrency bound must be Released; Keep extends
// its lease meanwhile.
func (l *Limiter) Acquire(ctx context.Context, scope, key string, lim Limit) (*Slot, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	tag := l.prefix + ":limit:{" + safe(scope+":"+key) + "}"
	s := &Slot{l: l, holder: rand.Text()}
	conc, rate := tag+":conc", tag+":rate"
	res, err := acquireScript.Run(ctx, l.client, []string{conc, rate},
		s.holder, lim.Concurrency, l.lease.Milliseconds(), lim.Rate, lim.Period.Milliseconds()).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("limiter: acquiring a slot: %w", err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("limiter: unexpected script answer %v", res)
	}
	wait := time.Duration(max(res[1], 1)) * time.Millisecond
	switch res[0] {
	case 1:
		s.Over, s.RetryIn = OverConcurrency, wait
	case 2:
		s.Over, s.RetryIn = OverRate, wait
	default:
		if lim.Concurrency > 0 {
			s.conc = conc
		}
	}
	return s, nil
}

// Release gives a held concurrency slot back. A rate slot is never given
// back: the start counts for its window.
func (s *Slot) Release(ctx context.Context) error {
	if s == nil || s.conc == "" {
		return nil
	}
	if err := s.l.client.ZRem(ctx, s.conc, s.holder).Err(); err != nil {
		return fmt.Errorf("limiter: releasing a slot: %w", err)
	}
	return nil
}

// Extend moves the slot's lease end to a lease from now. It reports
// false when the slot is no longer held (its lease ran out).
func (s *Slot) Extend(ctx context.Context) (bool, error) {
	if s == nil || s.conc == "" {
		return true, nil
	}
	n, err := extendScript.Run(ctx, s.l.client, []string{s.conc}, s.holder, s.l.lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("limiter: extending a slot: %w", err)
	}
	return n == 1, nil
}

// Keep extends the slot's lease every third of a lease until stop is
// called; stop waits for the extender to end. onLost is called (once at
// most) when an extension finds the slot gone or fails.
func (s *Slot) Keep(onLost func(error)) (stop func()) {
	if s == nil || s.conc == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.l.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			held, err := s.Extend(ctx)
			if ctx.Err() != nil {
				return
			}
			if err == nil && !held {
				err = errors.New("limiter: the slot's lease ran out before it was extended")
			}
			if err != nil && onLost != nil {
				onLost(err)
				onLost = nil
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// safe keeps short printable keys readable and hashes the rest, so keys
// stay bounded and never hold braces (which would break the hash tag).
func safe(s string) string {
	if len(s) <= 100 {
		ok := true
		for _, r := range s {
			if r < 0x21 || r > 0x7e || r == '{' || r == '}' {
				ok = false
				break
			}
		}
		if ok {
			return s
		}
	}
	sum := sha256.Sum256([]byte(s))
	return "h:" + hex.EncodeToString(sum[:16])
}

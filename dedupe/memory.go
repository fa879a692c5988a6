package dedupe

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// memorySweepEvery is how many operations a MemoryStore runs between two
// sweeps of expired entries.
const memorySweepEvery = 1024

// MemoryStore is a Store in process memory, for tests and for a single
// worker process. It is safe for concurrent use. Expired entries are
// treated as absent and are removed lazily.
type MemoryStore struct {
	mu      sync.Mutex
	now     func() time.Time
	entries map[string]memoryEntry
	ops     int
}

// memoryEntry is one key: done, or processing by owner, until expires.
type memoryEntry struct {
	done    bool
	owner   string
	expires time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemory returns an empty store that uses the wall clock.
func NewMemory() *MemoryStore {
	return &MemoryStore{now: time.Now, entries: make(map[string]memoryEntry)}
}

// SetClock makes the store read the time from now, so tests can move time
// forward. nil restores the wall clock.
func (m *MemoryStore) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Claim implements Store.
func (m *MemoryStore) Claim(ctx context.Context, key, owner string, lease time.Duration) (Status, error) {
	if err := m.check(ctx, opClaim, key, owner, "lease", lease); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.tick()
	e, ok := m.live(key, now)
	switch {
	case ok && e.done:
		return Done, nil
	case ok && e.owner != owner:
		return InProgress, nil
	}
	m.entries[key] = memoryEntry{owner: owner, expires: now.Add(lease)}
	return Claimed, nil
}

// Extend implements Store.
func (m *MemoryStore) Extend(ctx context.Context, key, owner string, lease time.Duration) error {
	if err := m.check(ctx, opExtend, key, owner, "lease", lease); err != nil {
		return err
	}
	return m.transition(key, owner, func(now time.Time) (memoryEntry, bool) {
		return memoryEntry{owner: owner, expires: now.Add(lease)}, true
	})
}

// MarkDone implements Store.
func (m *MemoryStore) MarkDone(ctx context.Context, key, owner string, ttl time.Duration) error {
	if err := m.check(ctx, opMarkDone, key, owner, "ttl", ttl); err != nil {
		return err
	}
	if m.isDone(key) {
		return nil // already done: the message's effect is recorded
	}
	return m.transition(key, owner, func(now time.Time) (memoryEntry, bool) {
		return memoryEntry{done: true, expires: now.Add(ttl)}, true
	})
}

func (m *MemoryStore) isDone(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(key, m.tick())
	return ok && e.done
}

// Release implements Store.
func (m *MemoryStore) Release(ctx context.Context, key, owner string) error {
	if err := checkArgs(opRelease, key, owner); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return opError(opRelease, key, err)
	}
	return m.transition(key, owner, func(time.Time) (memoryEntry, bool) {
		return memoryEntry{}, false
	})
}

// Ping implements Store. It fails only if ctx is done.
func (m *MemoryStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dedupe: ping: %w", err)
	}
	return nil
}

// check validates the arguments and ctx of a call that takes a duration.
func (m *MemoryStore) check(ctx context.Context, op, key, owner, name string, d time.Duration) error {
	if err := checkArgsDuration(op, key, owner, name, d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return opError(op, key, err)
	}
	return nil
}

// transition replaces owner's live claim on key with the entry next
// returns, or deletes the key if next returns false. It returns
// ErrNotOwner, changing nothing, if owner does not hold the claim.
func (m *MemoryStore) transition(key, owner string, next func(now time.Time) (memoryEntry, bool)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.tick()
	e, ok := m.live(key, now)
	if !ok || e.done || e.owner != owner {
		return ErrNotOwner
	}
	if ne, keep := next(now); keep {
		m.entries[key] = ne
	} else {
		delete(m.entries, key)
	}
	return nil
}

// live returns the entry of key if it has not expired at now, and deletes
// it if it has. m.mu must be held.
func (m *MemoryStore) live(key string, now time.Time) (memoryEntry, bool) {
	e, ok := m.entries[key]
	if !ok {
		return memoryEntry{}, false
	}
	if !now.Before(e.expires) {
		delete(m.entries, key)
		return memoryEntry{}, false
	}
	return e, true
}

// tick counts one operation, sweeps expired entries every
// memorySweepEvery operations and returns the current time. m.mu must be
// held.
func (m *MemoryStore) tick() time.Time {
	now := m.now()
	m.ops++
	if m.ops >= memorySweepEvery {
		m.ops = 0
		for k, e := range m.entries {
			if !now.Before(e.expires) {
				delete(m.entries, k)
			}
		}
	}
	return now
}

// Len returns the number of entries held, expired ones not yet removed
// included. It is meant for tests and metrics.
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

var _ BatchStore = (*MemoryStore)(nil)

// MarkDoneAll implements BatchStore.
func (m *MemoryStore) MarkDoneAll(ctx context.Context, reqs []Ref, ttl time.Duration) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = m.MarkDone(ctx, r.Key, r.Owner, ttl)
	}
	return errs
}

// ExtendAll implements BatchStore.
func (m *MemoryStore) ExtendAll(ctx context.Context, reqs []Ref, lease time.Duration) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = m.Extend(ctx, r.Key, r.Owner, lease)
	}
	return errs
}

// ClaimAll implements BatchStore.
func (m *MemoryStore) ClaimAll(ctx context.Context, reqs []Ref, lease time.Duration) []ClaimResult {
	res := make([]ClaimResult, len(reqs))
	for i, r := range reqs {
		res[i].Status, res[i].Err = m.Claim(ctx, r.Key, r.Owner, lease)
	}
	return res
}

package dedupetest

import (
	"sync"
	"time"
)

// Clock lets the suite move time forward for a store under test.
type Clock interface {
	// Advance moves the store's time forward by d.
	Advance(d time.Duration)
}

// ManualClock is a Clock for stores that read time from a function, such
// as dedupe.MemoryStore.SetClock(c.Now). It is safe for concurrent use.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a clock that reads start until advanced.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start}
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance implements Clock.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// SleepClock is the Clock of a store that uses real time, such as Redis:
// Advance sleeps.
type SleepClock struct{}

// Advance implements Clock by sleeping d.
func (SleepClock) Advance(d time.Duration) { time.Sleep(d) }

package retry

import (
	"fmt"
	"time"
)

// DefaultMaxAttempts is the number of handler runs when Policy.MaxAttempts is 0.
const DefaultMaxAttempts = 5

// MaxTiers is the largest number of delays a policy may have. Each delay
// is one queue on the broker, so the number is kept small.
const MaxTiers = 32

// DefaultDelays returns the tiers used when Policy.Delays is empty:
// 1s, 10s, 1m and 10m. The slice is new on each call.
func DefaultDelays() []time.Duration {
	return []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}
}

// Policy says how often and how late a failed message is tried again.
type Policy struct {
	// Delays are the retry tiers, ascending, each > 0 and at least 1ms,
	// whole milliseconds. nil (or empty) means DefaultDelays().
	Delays []time.Duration
	// MaxAttempts is the total number of handler runs, the first included.
	// 0 means DefaultMaxAttempts; 1 means never retry.
	MaxAttempts int
}

// WithDefaults returns p with zero fields filled in. The delays are copied,
// so the result shares no memory with p.
func (p Policy) WithDefaults() Policy {
	if len(p.Delays) == 0 {
		p.Delays = DefaultDelays()
	} else {
		p.Delays = append([]time.Duration(nil), p.Delays...)
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	return p
}

// Validate reports the first problem with p after defaults are applied,
// or nil if p can be used.
func (p Policy) Validate() error {
	if p.MaxAttempts < 0 {
		return fmt.Errorf("max attempts: must be at least 1, got %d", p.MaxAttempts)
	}
	return validateDelays(p.delays())
}

// Next reports what happens after attempt (1-based) failed with a
// retryable error: the delay of the tier to use and true, or 0 and false
// when no attempts are left. An attempt below 1 counts as 1.
func (p Policy) Next(attempt int) (time.Duration, bool) {
	attempt = max(attempt, 1)
	if attempt >= p.maxAttempts() {
		return 0, false
	}
	d := p.delays()
	return d[min(attempt-1, len(d)-1)], true
}

// TierFor returns the smallest tier that is at least wanted. A wanted delay
// above the largest tier gets the largest; zero or negative gets the smallest.
func (p Policy) TierFor(wanted time.Duration) time.Duration {
	d := p.delays()
	for _, t := range d {
		if t >= wanted {
			return t
		}
	}
	return d[len(d)-1]
}

// delays returns the effective delays without copying them.
func (p Policy) delays() []time.Duration {
	if len(p.Delays) == 0 {
		return DefaultDelays()
	}
	return p.Delays
}

// maxAttempts returns the effective number of attempts.
func (p Policy) maxAttempts() int {
	if p.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return p.MaxAttempts
}

// WaitTier is the tier for the round-th time (1 for the first) that a
// message is sent round a tier because it is in progress elsewhere, when
// a dead holder's claim lapses within lease. It stays on the first tier
// while lease may still be running out, so that a killed worker's message
// runs again soon after its claim lapses, then climbs one tier per round,
// so that a live but slow holder is waited for without a busy loop.
func (p Policy) WaitTier(round int, lease time.Duration) time.Duration {
	d := p.delays()
	grace := p.WaitRounds(lease)
	if round <= grace {
		return d[0]
	}
	return d[min(round-grace, len(d)-1)]
}

// WaitRounds is how many rounds of the first tier WaitTier gives a claim
// of lease: those that cover the lease, and one more, since a round's
// check may come a little before a lease renewed at the moment of a kill
// runs out.
func (p Policy) WaitRounds(lease time.Duration) int {
	d := p.delays()
	if lease <= 0 {
		return 2
	}
	return int((lease+d[0]-1)/d[0]) + 1
}

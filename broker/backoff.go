package broker

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing waits with full jitter: attempt n
// waits a random duration in [min/2, min*2^n], capped at max.
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) next() time.Duration {
	ceil := b.min << min(b.attempt, 30)
	if ceil > b.max || ceil <= 0 {
		ceil = b.max
	}
	b.attempt++
	floor := b.min / 2
	if ceil <= floor {
		return ceil
	}
	return floor + rand.N(ceil-floor)
}

func (b *backoff) reset() { b.attempt = 0 }

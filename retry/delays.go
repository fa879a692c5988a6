package retry

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// validateDelays checks that d can be used as retry tiers.
func validateDelays(d []time.Duration) error {
	if len(d) == 0 {
		return errors.New("retry delays: none given")
	}
	if len(d) > MaxTiers {
		return fmt.Errorf("retry delays: %d tiers, at most %d allowed", len(d), MaxTiers)
	}
	names := make(map[string]time.Duration, len(d))
	for i, x := range d {
		if err := checkDelay(x); err != nil {
			return err
		}
		if i > 0 && x <= d[i-1] {
			return fmt.Errorf("retry delays: %v is not greater than the previous %v", x, d[i-1])
		}
		name := FormatDelay(x)
		if other, ok := names[name]; ok {
			return fmt.Errorf("retry delays: %v and %v both give the tier name %q", other, x, name)
		}
		names[name] = x
	}
	return checkWhole(d)
}

// checkDelay checks the lower bound of one delay.
func checkDelay(x time.Duration) error {
	if x <= 0 {
		return fmt.Errorf("retry delays: %v is not positive", x)
	}
	if x < time.Millisecond {
		return fmt.Errorf("retry delays: %v is less than 1ms", x)
	}
	return nil
}

// checkWhole checks that every delay is a whole number of milliseconds,
// the unit of x-message-ttl.
func checkWhole(d []time.Duration) error {
	for _, x := range d {
		if x%time.Millisecond != 0 {
			return fmt.Errorf("retry delays: %v is not a whole number of milliseconds", x)
		}
	}
	return nil
}

// ParseDelays parses a comma-separated list such as "1s,10s,1m,10m".
// Items use time.ParseDuration syntax and may have spaces around them.
// The result is checked like Policy.Validate checks delays.
func ParseDelays(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("retry delays: empty list")
	}
	items := strings.Split(s, ",")
	out := make([]time.Duration, 0, len(items))
	for i, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("retry delays: item %d is empty", i+1)
		}
		d, err := time.ParseDuration(item)
		if err != nil {
			return nil, fmt.Errorf("retry delays: item %d: %w", i+1, err)
		}
		out = append(out, d)
	}
	if err := validateDelays(out); err != nil {
		return nil, err
	}
	return out, nil
}

// maxWholeMs is the largest whole number of milliseconds a Duration holds.
const maxWholeMs = math.MaxInt64 / int64(time.Millisecond)

// Exponential returns up to n delays base, base*factor, base*factor^2 and
// so on, each capped at max (0 or less means no cap) and rounded to whole
// milliseconds, at least 1ms. Repeats are dropped, so the result is
// strictly ascending. It returns nil if n <= 0, base <= 0 or factor < 1.
func Exponential(base time.Duration, factor float64, n int, max time.Duration) []time.Duration {
	if n <= 0 || base <= 0 || !(factor >= 1) {
		return nil
	}
	var out []time.Duration
	v := float64(base)
	for i := 0; i < n; i++ {
		capped := max > 0 && v >= float64(max)
		if capped {
			v = float64(max)
		}
		d := roundMs(v)
		if len(out) == 0 || d > out[len(out)-1] {
			out = append(out, d)
		}
		if capped || d == time.Duration(maxWholeMs)*time.Millisecond || factor == 1 {
			break
		}
		v *= factor
	}
	return out
}

// roundMs rounds ns nanoseconds to whole milliseconds, keeping the result
// between 1ms and the largest whole-millisecond Duration.
func roundMs(ns float64) time.Duration {
	ms := math.Round(ns / float64(time.Millisecond))
	switch {
	case ms < 1:
		ms = 1
	case ms >= float64(maxWholeMs):
		return time.Duration(maxWholeMs) * time.Millisecond
	}
	return time.Duration(ms) * time.Millisecond
}

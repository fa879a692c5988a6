package retry_test

import (
	"testing"

	"github.com/warrenmq/warren/retry"
)

// FuzzAttempt feeds strings and integers of several types as the header.
func FuzzAttempt(f *testing.F) {
	f.Add("1", int64(1))
	f.Add("", int64(0))
	f.Add("abc", int64(-1))
	f.Fuzz(func(t *testing.T, s string, i int64) {
		values := []any{s, i, int32(i), int8(i), uint64(i), uint32(i), float64(i), float32(i)}
		for _, v := range values {
			n, err := retry.Attempt(map[string]any{retry.AttemptHeader: v})
			if err == nil && (n < 1 || n > retry.MaxAttemptValue) {
				t.Fatalf("Attempt(%T %v) = %d with no error", v, v, n)
			}
		}
		n, err := retry.Attempt(map[string]any{retry.AttemptHeader: i})
		inRange := i >= 1 && i <= retry.MaxAttemptValue
		if inRange != (err == nil) || (inRange && int64(n) != i) {
			t.Fatalf("Attempt(int64 %d) = %d, %v", i, n, err)
		}
	})
}

// FuzzParseDelays checks that anything ParseDelays accepts is usable.
func FuzzParseDelays(f *testing.F) {
	f.Add("1s,10s,1m,10m")
	f.Add("")
	f.Add("1.5ms")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := retry.ParseDelays(s)
		if err != nil {
			if d != nil {
				t.Fatalf("ParseDelays(%q) returned %v with error %v", s, d, err)
			}
			return
		}
		for i, x := range d {
			if x <= 0 || (i > 0 && x <= d[i-1]) {
				t.Fatalf("ParseDelays(%q) = %v: not strictly ascending and positive", s, d)
			}
		}
		if err := (retry.Policy{Delays: d}).Validate(); err != nil {
			t.Fatalf("ParseDelays(%q) = %v, but Validate says %v", s, d, err)
		}
	})
}

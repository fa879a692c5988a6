package retry

import (
	"fmt"
	"math"
	"strconv"
)

// AttemptHeader is the message header that holds the attempt number.
const AttemptHeader = "warren-attempt"

// MaxAttemptValue is the largest attempt number Attempt accepts. Anything
// above it is taken as a corrupt header.
const MaxAttemptValue = 1_000_000

// Attempt reads the attempt number from message headers. A missing header
// (or nil headers) means attempt 1. Integers of any type, whole floats and
// strings of decimal digits are accepted, since other clients may write
// the header differently.
func Attempt(headers map[string]any) (int, error) {
	v, ok := headers[AttemptHeader]
	if !ok {
		return 1, nil
	}
	switch x := v.(type) {
	case int:
		return fromInt(int64(x))
	case int8:
		return fromInt(int64(x))
	case int16:
		return fromInt(int64(x))
	case int32:
		return fromInt(int64(x))
	case int64:
		return fromInt(x)
	case uint:
		return fromUint(uint64(x))
	case uint8:
		return fromUint(uint64(x))
	case uint16:
		return fromUint(uint64(x))
	case uint32:
		return fromUint(uint64(x))
	case uint64:
		return fromUint(x)
	case float32:
		return fromFloat(float64(x))
	case float64:
		return fromFloat(x)
	case string:
		return fromString(x)
	}
	return 0, fmt.Errorf("%s header has type %T, want an integer", AttemptHeader, v)
}

// SetAttempt returns a copy of headers with the attempt number set to n as
// an int32, the integer type AMQP tables accept. n is clamped to the int32
// range. headers may be nil and is not changed.
func SetAttempt(headers map[string]any, n int) map[string]any {
	out := make(map[string]any, len(headers)+1)
	for k, v := range headers {
		out[k] = v
	}
	out[AttemptHeader] = int32(min(max(n, math.MinInt32), math.MaxInt32))
	return out
}

func fromInt(n int64) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("%s header is %d, must be at least 1", AttemptHeader, n)
	}
	return fromUint(uint64(n))
}

func fromUint(n uint64) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("%s header is %d, must be at least 1", AttemptHeader, n)
	}
	if n > MaxAttemptValue {
		return 0, fmt.Errorf("%s header is %d, must be at most %d", AttemptHeader, n, MaxAttemptValue)
	}
	return int(n), nil
}

func fromFloat(f float64) (int, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
		return 0, fmt.Errorf("%s header %v is not an integer", AttemptHeader, f)
	}
	if f < 1 {
		return 0, fmt.Errorf("%s header is %v, must be at least 1", AttemptHeader, f)
	}
	if f > MaxAttemptValue {
		return 0, fmt.Errorf("%s header is %v, must be at most %d", AttemptHeader, f, MaxAttemptValue)
	}
	return int(f), nil
}

func fromString(s string) (int, error) {
	if !allDigits(s) {
		return 0, fmt.Errorf("%s header %q is not a decimal number", AttemptHeader, shorten(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil { // only overflow is possible here
		return 0, fmt.Errorf("%s header is %s, must be at most %d", AttemptHeader, shorten(s), MaxAttemptValue)
	}
	return fromUint(n)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// shorten keeps error messages short when a header holds a long string.
func shorten(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

package retry

import (
	"strconv"
	"time"
)

// TierQueue returns the name of the tier queue for delay on queue, such as
// "orders.retry.5s".
func TierQueue(queue string, delay time.Duration) string {
	return queue + ".retry." + FormatDelay(delay)
}

// DLQ returns the name of the dead-letter queue of queue, such as "orders.dlq".
func DLQ(queue string) string {
	return queue + ".dlq"
}

// FormatDelay writes d in a short form that is different for every whole
// number of milliseconds: 200ms, 1s, 1500ms, 10s, 1m30s, 1h, 1h30m, 36h.
// Durations that are not whole seconds are written in milliseconds only.
// Parts below a millisecond are dropped.
func FormatDelay(d time.Duration) string {
	d = d.Truncate(time.Millisecond)
	switch {
	case d < 0:
		return "-" + FormatDelay(-d)
	case d == 0:
		return "0s"
	case d%time.Second != 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	var b []byte
	b = appendUnit(b, int64(d/time.Hour), 'h')
	b = appendUnit(b, int64(d%time.Hour/time.Minute), 'm')
	b = appendUnit(b, int64(d%time.Minute/time.Second), 's')
	return string(b)
}

// appendUnit appends n followed by unit, unless n is 0.
func appendUnit(b []byte, n int64, unit byte) []byte {
	if n == 0 {
		return b
	}
	return append(strconv.AppendInt(b, n, 10), unit)
}

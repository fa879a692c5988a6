package retry_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/retry"
)

const ms = time.Millisecond

func ds(d ...time.Duration) []time.Duration { return d }

func TestDefaultDelays(t *testing.T) {
	a := retry.DefaultDelays()
	want := ds(time.Second, 10*time.Second, time.Minute, 10*time.Minute)
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("DefaultDelays() = %v, want %v", a, want)
	}
	a[0] = time.Hour
	if retry.DefaultDelays()[0] != time.Second {
		t.Fatal("DefaultDelays shares its slice between calls")
	}
}

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   retry.Policy
		want retry.Policy
	}{
		{"zero", retry.Policy{}, retry.Policy{Delays: retry.DefaultDelays(), MaxAttempts: 5}},
		{"empty delays", retry.Policy{Delays: ds()}, retry.Policy{Delays: retry.DefaultDelays(), MaxAttempts: 5}},
		{"kept", retry.Policy{Delays: ds(time.Second), MaxAttempts: 1}, retry.Policy{Delays: ds(time.Second), MaxAttempts: 1}},
		{"negative kept", retry.Policy{MaxAttempts: -2}, retry.Policy{Delays: retry.DefaultDelays(), MaxAttempts: -2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.WithDefaults(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWithDefaultsCopies(t *testing.T) {
	in := retry.Policy{Delays: ds(time.Second, 2*time.Second)}
	out := in.WithDefaults()
	out.Delays[0] = time.Hour
	if in.Delays[0] != time.Second {
		t.Fatal("WithDefaults shares the delays slice")
	}
}

func TestValidate(t *testing.T) {
	many := make([]time.Duration, retry.MaxTiers+1)
	for i := range many {
		many[i] = time.Duration(i+1) * time.Second
	}
	tests := []struct {
		name string
		p    retry.Policy
		want string // empty means no error
	}{
		{"zero policy", retry.Policy{}, ""},
		{"one attempt", retry.Policy{MaxAttempts: 1}, ""},
		{"max tiers", retry.Policy{Delays: many[:retry.MaxTiers]}, ""},
		{"odd but whole", retry.Policy{Delays: ds(1*ms, 1500*ms, 90*time.Second)}, ""},
		{"negative attempts", retry.Policy{MaxAttempts: -2}, "max attempts: must be at least 1, got -2"},
		{"too many", retry.Policy{Delays: many}, "33 tiers, at most 32"},
		{"zero delay", retry.Policy{Delays: ds(0)}, "retry delays: 0s is not positive"},
		{"negative delay", retry.Policy{Delays: ds(time.Second, -time.Second)}, "retry delays: -1s is not positive"},
		{"sub ms", retry.Policy{Delays: ds(500 * time.Microsecond)}, "retry delays: 500µs is less than 1ms"},
		{"equal", retry.Policy{Delays: ds(10*time.Second, 10*time.Second)}, "retry delays: 10s is not greater than the previous 10s"},
		{"descending", retry.Policy{Delays: ds(time.Minute, time.Second)}, "1s is not greater than the previous 1m0s"},
		{"not whole", retry.Policy{Delays: ds(1500 * time.Microsecond)}, "retry delays: 1.5ms is not a whole number of milliseconds"},
		{"same name", retry.Policy{Delays: ds(1200*time.Microsecond, 1700*time.Microsecond)}, `both give the tier name "1ms"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, tt.p.Validate(), tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestNext(t *testing.T) {
	p := retry.Policy{Delays: ds(time.Second, time.Minute), MaxAttempts: 4}
	tests := []struct {
		name    string
		p       retry.Policy
		attempt int
		want    time.Duration
		ok      bool
	}{
		{"first failure", p, 1, time.Second, true},
		{"second failure", p, 2, time.Minute, true},
		{"past last tier", p, 3, time.Minute, true},
		{"used up", p, 4, 0, false},
		{"far past", p, 100, 0, false},
		{"zero is one", p, 0, time.Second, true},
		{"negative is one", p, -7, time.Second, true},
		{"never retry", retry.Policy{MaxAttempts: 1}, 1, 0, false},
		{"defaults 1", retry.Policy{}, 1, time.Second, true},
		{"defaults 4", retry.Policy{}, 4, 10 * time.Minute, true},
		{"defaults 5", retry.Policy{}, 5, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.p.Next(tt.attempt)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Next(%d) = %v, %v; want %v, %v", tt.attempt, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestTierFor(t *testing.T) {
	p := retry.Policy{Delays: ds(time.Second, 10*time.Second, time.Minute)}
	tests := []struct {
		wanted, want time.Duration
	}{
		{-time.Second, time.Second},
		{0, time.Second},
		{ms, time.Second},
		{time.Second, time.Second},
		{time.Second + 1, 10 * time.Second},
		{30 * time.Second, time.Minute},
		{time.Minute, time.Minute},
		{time.Hour, time.Minute},
	}
	for _, tt := range tests {
		if got := p.TierFor(tt.wanted); got != tt.want {
			t.Errorf("TierFor(%v) = %v, want %v", tt.wanted, got, tt.want)
		}
	}
	if got := (retry.Policy{}).TierFor(5 * time.Second); got != 10*time.Second {
		t.Errorf("default TierFor(5s) = %v, want 10s", got)
	}
}

func TestFormatDelay(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{200 * ms, "200ms"},
		{time.Second, "1s"},
		{1500 * ms, "1500ms"},
		{10 * time.Second, "10s"},
		{time.Minute, "1m"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + 5*time.Second, "1h5s"},
		{36 * time.Hour, "36h"},
		{61500 * ms, "61500ms"},
		{1500 * time.Microsecond, "1ms"},
		{999 * time.Microsecond, "0s"},
		{-90 * time.Second, "-1m30s"},
		{math.MinInt64, "-9223372036854ms"},
		{math.MaxInt64, "9223372036854ms"},
	}
	for _, tt := range tests {
		if got := retry.FormatDelay(tt.in); got != tt.want {
			t.Errorf("FormatDelay(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatDelayUnique(t *testing.T) {
	seen := map[string]time.Duration{}
	for i := 1; i <= 200_000; i += 7 {
		d := time.Duration(i) * 37 * ms
		name := retry.FormatDelay(d)
		if prev, ok := seen[name]; ok {
			t.Fatalf("%v and %v both format to %q", prev, d, name)
		}
		seen[name] = d
	}
}

func TestNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{retry.TierQueue("orders", 5*time.Second), "orders.retry.5s"},
		{retry.TierQueue("orders", 90*time.Second), "orders.retry.1m30s"},
		{retry.TierQueue("a.b", 250*ms), "a.b.retry.250ms"},
		{retry.DLQ("orders"), "orders.dlq"},
		{retry.DLQ(""), ".dlq"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseDelays(t *testing.T) {
	tests := []struct {
		in   string
		want []time.Duration
		err  string
	}{
		{"1s,10s,1m,10m", retry.DefaultDelays(), ""},
		{" 1s , 1m30s ,\t2h ", ds(time.Second, 90*time.Second, 2*time.Hour), ""},
		{"250ms", ds(250 * ms), ""},
		{"", nil, "empty list"},
		{"  ", nil, "empty list"},
		{"1s,,2s", nil, "item 2 is empty"},
		{"1s,", nil, "item 2 is empty"},
		{"1s,soon", nil, `item 2: time: invalid duration "soon"`},
		{"10", nil, "item 1: time: missing unit"},
		{"2s,1s", nil, "1s is not greater than the previous 2s"},
		{"1s,1s", nil, "not greater than the previous"},
		{"0s", nil, "0s is not positive"},
		{"-1s", nil, "-1s is not positive"},
		{"100us", nil, "less than 1ms"},
		{"1.5ms", nil, "1.5ms is not a whole number of milliseconds"},
		{strings.Repeat("1s,", 32) + "1s", nil, "33 tiers"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := retry.ParseDelays(tt.in)
			checkErr(t, err, tt.err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseDelays(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestExponential(t *testing.T) {
	maxDelay := time.Duration(math.MaxInt64/int64(ms)) * ms
	tests := []struct {
		name   string
		base   time.Duration
		factor float64
		n      int
		max    time.Duration
		want   []time.Duration
	}{
		{"doubling", time.Second, 2, 4, 0, ds(time.Second, 2*time.Second, 4*time.Second, 8*time.Second)},
		{"capped", time.Second, 10, 5, time.Minute, ds(time.Second, 10*time.Second, time.Minute)},
		{"cap not reached", time.Second, 2, 2, time.Hour, ds(time.Second, 2*time.Second)},
		{"rounded", 100 * ms, 1.5, 4, 0, ds(100*ms, 150*ms, 225*ms, 338*ms)},
		{"sub ms base", 300 * time.Microsecond, 2, 4, 0, ds(ms, 2*ms)},
		{"factor one", time.Second, 1, 10, 0, ds(time.Second)},
		{"max rounded", time.Second, 2, 3, 1500*ms + 600*time.Microsecond, ds(time.Second, 1501*ms)},
		{"overflow", time.Hour, math.Inf(1), 3, 0, ds(time.Hour, maxDelay)},
		{"huge cap", time.Hour, 1e30, 5, math.MaxInt64, ds(time.Hour, maxDelay)},
		{"negative cap is none", time.Second, 2, 2, -time.Second, ds(time.Second, 2*time.Second)},
		{"n zero", time.Second, 2, 0, 0, nil},
		{"n negative", time.Second, 2, -1, 0, nil},
		{"base zero", 0, 2, 3, 0, nil},
		{"base negative", -time.Second, 2, 3, 0, nil},
		{"factor below one", time.Second, 0.5, 3, 0, nil},
		{"factor NaN", time.Second, math.NaN(), 3, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := retry.Exponential(tt.base, tt.factor, tt.n, tt.max)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestExponentialIsValid(t *testing.T) {
	d := retry.Exponential(time.Second, 1.7, retry.MaxTiers, 12*time.Hour)
	if err := (retry.Policy{Delays: d}).Validate(); err != nil {
		t.Fatalf("Exponential result %v is not valid: %v", d, err)
	}
}

type weird struct{}

func TestAttempt(t *testing.T) {
	h := func(v any) map[string]any { return map[string]any{retry.AttemptHeader: v} }
	tests := []struct {
		name    string
		headers map[string]any
		want    int
		err     string
	}{
		{"nil map", nil, 1, ""},
		{"missing", map[string]any{"other": 7}, 1, ""},
		{"int", h(3), 3, ""},
		{"int8", h(int8(4)), 4, ""},
		{"int16", h(int16(5)), 5, ""},
		{"int32", h(int32(6)), 6, ""},
		{"int64", h(int64(7)), 7, ""},
		{"uint", h(uint(8)), 8, ""},
		{"uint8", h(uint8(9)), 9, ""},
		{"uint16", h(uint16(10)), 10, ""},
		{"uint32", h(uint32(11)), 11, ""},
		{"uint64", h(uint64(12)), 12, ""},
		{"float32", h(float32(13)), 13, ""},
		{"float64", h(float64(14)), 14, ""},
		{"string", h("15"), 15, ""},
		{"leading zeros", h("007"), 7, ""},
		{"max", h(retry.MaxAttemptValue), retry.MaxAttemptValue, ""},
		{"max string", h("1000000"), retry.MaxAttemptValue, ""},
		{"bytes", h([]byte("3")), 0, "warren-attempt header has type []uint8, want an integer"},
		{"nil value", h(nil), 0, "has type <nil>, want an integer"},
		{"bool", h(true), 0, "has type bool"},
		{"struct", h(weird{}), 0, "has type retry_test.weird"},
		{"zero", h(0), 0, "is 0, must be at least 1"},
		{"negative", h(int64(-3)), 0, "is -3, must be at least 1"},
		{"min int64", h(int64(math.MinInt64)), 0, "must be at least 1"},
		{"uint zero", h(uint8(0)), 0, "must be at least 1"},
		{"too big", h(retry.MaxAttemptValue + 1), 0, "is 1000001, must be at most 1000000"},
		{"max uint64", h(uint64(math.MaxUint64)), 0, "must be at most"},
		{"fraction", h(1.5), 0, "header 1.5 is not an integer"},
		{"NaN", h(math.NaN()), 0, "NaN is not an integer"},
		{"Inf", h(float32(math.Inf(1))), 0, "+Inf is not an integer"},
		{"float zero", h(0.0), 0, "must be at least 1"},
		{"float too big", h(1e7), 0, "must be at most"},
		{"float huge", h(1e300), 0, "must be at most"},
		{"empty string", h(""), 0, `header "" is not a decimal number`},
		{"letters", h("abc"), 0, `"abc" is not a decimal number`},
		{"sign", h("+3"), 0, "not a decimal number"},
		{"minus", h("-3"), 0, "not a decimal number"},
		{"space", h(" 3"), 0, "not a decimal number"},
		{"string zero", h("0"), 0, "must be at least 1"},
		{"string too big", h("1000001"), 0, "must be at most"},
		{"string overflow", h(strings.Repeat("9", 60)), 0, "...,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := retry.Attempt(tt.headers)
			checkErr(t, err, tt.err)
			if got != tt.want {
				t.Fatalf("Attempt = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSetAttempt(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]any
		n    int
		want map[string]any
	}{
		{"nil", nil, 2, map[string]any{retry.AttemptHeader: int32(2)}},
		{"keeps others", map[string]any{"x": "y"}, 3, map[string]any{"x": "y", retry.AttemptHeader: int32(3)}},
		{"replaces", map[string]any{retry.AttemptHeader: "9"}, 4, map[string]any{retry.AttemptHeader: int32(4)}},
		{"clamped high", nil, math.MaxInt32 + 10, map[string]any{retry.AttemptHeader: int32(math.MaxInt32)}},
		{"clamped low", nil, math.MinInt32 - 10, map[string]any{retry.AttemptHeader: int32(math.MinInt32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before map[string]any
			if tt.in != nil {
				before = map[string]any{}
				for k, v := range tt.in {
					before[k] = v
				}
			}
			got := retry.SetAttempt(tt.in, tt.n)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in, before) {
				t.Fatalf("input changed to %v", tt.in)
			}
		})
	}
}

func TestSetAttemptRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 17, retry.MaxAttemptValue} {
		got, err := retry.Attempt(retry.SetAttempt(nil, n))
		if err != nil || got != n {
			t.Errorf("round trip of %d gave %d, %v", n, got, err)
		}
	}
}

// A handler for queue "orders" failed; decide where the message goes.
func Example() {
	p := retry.Policy{Delays: []time.Duration{time.Second, 90 * time.Second}, MaxAttempts: 3}
	headers := map[string]any{retry.AttemptHeader: int32(1)}
	for {
		attempt, err := retry.Attempt(headers)
		if err != nil {
			fmt.Println(err)
			return
		}
		delay, ok := p.Next(attempt)
		if !ok {
			fmt.Printf("attempt %d: to %s\n", attempt, retry.DLQ("orders"))
			return
		}
		fmt.Printf("attempt %d: to %s\n", attempt, retry.TierQueue("orders", delay))
		headers = retry.SetAttempt(headers, attempt+1)
	}
	// Output:
	// attempt 1: to orders.retry.1s
	// attempt 2: to orders.retry.1m30s
	// attempt 3: to orders.dlq
}

func TestWaitTier(t *testing.T) {
	p := retry.Policy{Delays: []time.Duration{time.Second, 10 * time.Second, time.Minute}}
	cases := []struct {
		round int
		lease time.Duration
		want  time.Duration
	}{
		{1, 3 * time.Second, time.Second},
		{4, 3 * time.Second, time.Second}, // three rounds of 1s cover a 3s lease, and one more
		{5, 3 * time.Second, 10 * time.Second},
		{6, 3 * time.Second, time.Minute},
		{50, 3 * time.Second, time.Minute},
		{1, 2500 * time.Millisecond, time.Second},
		{4, 2500 * time.Millisecond, time.Second},
		{5, 2500 * time.Millisecond, 10 * time.Second},
		{2, 0, time.Second},
		{3, 0, 10 * time.Second},
	}
	for _, c := range cases {
		if got := p.WaitTier(c.round, c.lease); got != c.want {
			t.Errorf("WaitTier(%d, %s) = %s, want %s", c.round, c.lease, got, c.want)
		}
	}
}

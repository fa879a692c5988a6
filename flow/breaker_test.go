package flow

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps the transitions a breaker reports.
type recorder struct {
	mu  sync.Mutex
	chs []Change
	got chan State
}

func newRecorder() *recorder { return &recorder{got: make(chan State, 64)} }

func (r *recorder) on(c Change) {
	r.mu.Lock()
	r.chs = append(r.chs, c)
	r.mu.Unlock()
	r.got <- c.To
}

func (r *recorder) want(t *testing.T, s State) {
	t.Helper()
	select {
	case got := <-r.got:
		if got != s {
			t.Fatalf("transition to %s, want %s", got, s)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no transition to %s", s)
	}
}

func TestBreakerThresholdOpensAndTrialCloses(t *testing.T) {
	rec := newRecorder()
	b, err := NewBreaker(BreakerConfig{Threshold: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, OnChange: rec.on})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	b.Report(false, Failure, boom)
	b.Report(false, Failure, boom)
	b.Report(false, Success, nil) // resets the count
	b.Report(false, Failure, boom)
	b.Report(false, Failure, boom)
	if b.State() != Closed {
		t.Fatalf("state %s after 2 consecutive failures, want closed", b.State())
	}
	b.Report(false, Failure, boom)
	rec.want(t, Open)
	if _, ok := b.Admit(context.Background()); ok {
		t.Fatal("an open breaker admitted work")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rec.want(t, HalfOpen)
	trial, ok := b.Admit(ctx)
	if !trial || !ok {
		t.Fatalf("half-open breaker: trial=%v ok=%v, want a trial", trial, ok)
	}
	// A second caller waits for the trial's result.
	second := make(chan bool, 1)
	go func() { tr, ok := b.Admit(ctx); second <- ok && !tr }()
	select {
	case <-second:
		t.Fatal("a second caller went through beside the trial")
	case <-time.After(50 * time.Millisecond):
	}
	b.Report(true, Failure, boom) // the trial failed: open again, probe again
	rec.want(t, Open)
	if ok := <-second; ok {
		t.Fatal("the waiting caller was admitted after the trial failed")
	}
	rec.want(t, HalfOpen)
	trial, ok = b.Admit(ctx)
	if !trial || !ok {
		t.Fatalf("second half-open: trial=%v ok=%v", trial, ok)
	}
	b.Report(true, Success, nil)
	rec.want(t, Closed)
	if tr, ok := b.Admit(ctx); tr || !ok {
		t.Fatalf("closed breaker: trial=%v ok=%v", tr, ok)
	}
}

func TestBreakerTripAndProbe(t *testing.T) {
	rec := newRecorder()
	var mu sync.Mutex
	up := false
	probes := 0
	b, err := NewBreaker(BreakerConfig{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, OnChange: rec.on,
		Probe: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			probes++
			if !up {
				return errors.New("still down")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		b.Report(false, Failure, errors.New("x")) // no threshold: failures alone never open
	}
	if b.State() != Closed {
		t.Fatal("failures opened a breaker without a threshold")
	}
	b.Trip(errors.New("db down"))
	rec.want(t, Open)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rec.want(t, Open) // a failed probe is reported with its cause
	mu.Lock()
	up = true
	mu.Unlock()
	for {
		select {
		case s := <-rec.got:
			if s == Closed {
				mu.Lock()
				n := probes
				mu.Unlock()
				if n < 2 {
					t.Fatalf("closed after %d probes, want at least 2", n)
				}
				return
			}
			if s != Open {
				t.Fatalf("transition to %s with a probe function", s)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the breaker did not close after the probe succeeded")
		}
	}
}

func TestBreakerBackoffGrowsAndIsBounded(t *testing.T) {
	b, err := NewBreaker(BreakerConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		b.failedN = n
		got := b.waitLocked()
		if w := want * time.Millisecond; got > w || got < w*4/5 {
			t.Fatalf("wait after %d failed probes = %s, want in [%s, %s]", n, got, w*4/5, w)
		}
	}
}

func TestNewBreakerRejectsBadConfig(t *testing.T) {
	for _, c := range []BreakerConfig{{Threshold: -1}, {MinBackoff: time.Second, MaxBackoff: time.Millisecond}, {ProbeTimeout: -1}} {
		if _, err := NewBreaker(c); err == nil {
			t.Fatalf("NewBreaker(%+v) accepted a bad config", c)
		}
	}
}

// One trial at a time, even when the breaker opens again under it: a
// late Down from work admitted before the pause reopens a half-open
// breaker while its trial runs; the next half-open admits no second trial
// until the first reports, and that late Down does not lengthen the wait.
func TestBreakerOneTrialAcrossReopen(t *testing.T) {
	rec := newRecorder()
	b, err := NewBreaker(BreakerConfig{MinBackoff: time.Millisecond, MaxBackoff: time.Hour, OnChange: rec.on})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	down := errors.New("down")
	b.Trip(down)
	rec.want(t, Open)
	rec.want(t, HalfOpen)
	if trial, ok := b.Admit(ctx); !trial || !ok {
		t.Fatal("no first trial")
	}
	b.Report(false, Down, down) // work from before the pause
	rec.want(t, Open)
	rec.want(t, HalfOpen)
	second, cancelSecond := context.WithTimeout(ctx, 50*time.Millisecond)
	trial, ok := b.Admit(second)
	cancelSecond()
	if ok {
		t.Fatalf("admitted (trial %v) while the first trial still runs", trial)
	}
	b.mu.Lock()
	failed := b.failedN
	b.mu.Unlock()
	if failed != 0 {
		t.Errorf("%d failed probes counted, want 0: no trial failed", failed)
	}
	// The first trial's result decides: a Neutral one passes the slot on.
	b.Report(true, Neutral, nil)
	if trial, ok := b.Admit(ctx); !trial || !ok {
		t.Fatal("no trial after the first one reported")
	}
	b.Report(true, Success, nil)
	rec.want(t, Closed)
}

// A probe that panics is a failed probe, not the end of the process.
func TestBreakerProbePanicIsAFailedProbe(t *testing.T) {
	rec := newRecorder()
	probes := make(chan struct{}, 8)
	b, err := NewBreaker(BreakerConfig{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, OnChange: rec.on,
		Probe: func(context.Context) error {
			probes <- struct{}{}
			if len(probes) == 1 {
				panic("nil map in the probe")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	b.Trip(errors.New("down"))
	rec.want(t, Open)
	rec.want(t, Open) // the panicking probe failed
	rec.want(t, Closed)
	rec.mu.Lock()
	cause := rec.chs[1].Cause
	rec.mu.Unlock()
	if cause == nil || !strings.Contains(cause.Error(), "the probe panicked: nil map in the probe") {
		t.Errorf("the failed probe's cause: %v", cause)
	}
}

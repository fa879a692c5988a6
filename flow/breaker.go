package flow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Breaker defaults.
const (
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultProbeTimeout = 10 * time.Second
)

// State is where a breaker stands.
type State int32

// States. Closed lets work through; Open lets none through and waits to
// probe; HalfOpen lets one trial through (when there is no probe
// function) and holds the rest until the trial's result.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// Result is what a piece of work tells the breaker.
type Result int

// Results.
const (
	// Neutral says nothing about the dependency (a bad message, a
	// duplicate): the count is kept; a trial's slot goes to the next.
	Neutral Result = iota
	// Success resets the count and closes a half-open breaker.
	Success
	// Failure counts toward the threshold; a failed trial opens again.
	Failure
	// Down opens the breaker at once: the dependency is known down.
	Down
)

// Change is a transition, given to BreakerConfig.OnChange.
type Change struct {
	From, To State
	// Cause is why the breaker opened: the failure or probe error. nil
	// for other transitions.
	Cause error
	// Wait is how long an opened breaker waits before its next probe.
	Wait time.Duration
}

// BreakerConfig configures a Breaker.
type BreakerConfig struct {
	// Threshold is how many consecutive failures open the breaker. 0
	// means only Down (Trip) opens it.
	Threshold int
	// MinBackoff is the wait before the first probe. 0 means
	// DefaultMinBackoff.
	MinBackoff time.Duration
	// MaxBackoff bounds the wait, which doubles (with jitter) after each
	// failed probe. 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Probe checks the dependency; nil means a trial: the breaker goes
	// half-open and lets one piece of work through.
	Probe func(context.Context) error
	// ProbeTimeout bounds one Probe call. 0 means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// OnChange is called on every transition, with the breaker's lock
	// held so that calls come in order: it must be quick and must not
	// call the breaker. nil means none.
	OnChange func(Change)
}

// Breaker is the outage breaker of one stream of work. Its methods are
// safe for concurrent use; Run owns the waits and probes.
type Breaker struct {
	cfg BreakerConfig

	mu       sync.Mutex
	state    State
	fails    int
	trialOut bool          // a trial was admitted and has not reported yet
	failedN  int           // probes or trials failed since the breaker opened
	changed  chan struct{} // closed and replaced on every change
}

// NewBreaker validates cfg and returns a closed breaker.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	switch {
	case cfg.Threshold < 0:
		return nil, fmt.Errorf("breaker: threshold must not be negative, got %d", cfg.Threshold)
	case cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff:
		return nil, fmt.Errorf("breaker: backoff must be positive with min <= max, got %s..%s", cfg.MinBackoff, cfg.MaxBackoff)
	case cfg.ProbeTimeout < 0:
		return nil, fmt.Errorf("breaker: probe timeout must be positive, got %s", cfg.ProbeTimeout)
	}
	return &Breaker{cfg: cfg, changed: make(chan struct{})}, nil
}

// State returns the breaker's state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Admit asks whether a piece of work may start. Closed: yes. Open: no.
// Half-open: the first caller runs as the trial (trial true); the others
// wait for its result, then are let through (closed) or not (open).
// There is never more than one trial out: a trial that outlives its
// half-open (the breaker opened again meanwhile, on a report of older
// work) keeps the next half-open waiting until it reports, and its
// result decides that one. It returns false when ctx ends while waiting.
func (b *Breaker) Admit(ctx context.Context) (trial, ok bool) {
	for {
		b.mu.Lock()
		switch b.state {
		case Closed:
			b.mu.Unlock()
			return false, true
		case Open:
			b.mu.Unlock()
			return false, false
		}
		if !b.trialOut {
			b.trialOut = true
			b.mu.Unlock()
			return true, true
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, false
		}
	}
}

// Report tells the breaker how a piece of work went; trial is what
// Admit said. Results of work that started before the breaker opened
// count only when they say the dependency is down, and then do not
// lengthen the wait before the next probe: only failed probes and trials
// do.
func (b *Breaker) Report(trial bool, r Result, cause error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if trial {
		b.trialOut = false
	}
	switch r {
	case Down:
		b.openLocked(cause, trial)
	case Success:
		b.fails = 0
		if trial && b.state == HalfOpen {
			b.setLocked(Closed, nil, 0)
		}
	case Failure:
		switch {
		case trial && b.state == HalfOpen:
			b.openLocked(cause, true)
		case b.state == Closed:
			b.fails++
			if b.cfg.Threshold > 0 && b.fails >= b.cfg.Threshold {
				b.openLocked(fmt.Errorf("%d consecutive failures, the last: %w", b.fails, cause), false)
			}
		}
	default:
		if trial && b.state == HalfOpen {
			b.notifyLocked() // the trial's slot goes to the next
		}
	}
}

// Trip opens the breaker: the dependency is down.
func (b *Breaker) Trip(cause error) { b.Report(false, Down, cause) }

// openLocked opens the breaker; failedTrial says a trial's failure did,
// which lengthens the wait before the next probe.
func (b *Breaker) openLocked(cause error, failedTrial bool) {
	if b.state == Open {
		return
	}
	if b.state == HalfOpen && failedTrial {
		b.failedN++
	}
	b.setLocked(Open, cause, b.waitLocked())
}

// waitLocked is the wait before the next probe: MinBackoff doubled per
// failed probe, bounded by MaxBackoff, with up to a fifth taken off at
// random so that a fleet's probes spread out.
func (b *Breaker) waitLocked() time.Duration {
	d := b.cfg.MinBackoff
	for i := 0; i < b.failedN && d < b.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, b.cfg.MaxBackoff)
	return d - time.Duration(rand.Int64N(int64(d/5)+1))
}

func (b *Breaker) setLocked(to State, cause error, wait time.Duration) {
	from := b.state
	b.state = to
	if to == Closed {
		b.fails, b.failedN = 0, 0
	}
	b.notifyLocked()
	if b.cfg.OnChange != nil {
		b.cfg.OnChange(Change{From: from, To: to, Cause: cause, Wait: wait})
	}
}

func (b *Breaker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Run waits and probes while the breaker is open, until ctx ends.
func (b *Breaker) Run(ctx context.Context) {
	for {
		b.mu.Lock()
		state, ch := b.state, b.changed
		wait := time.Duration(0)
		if state == Open {
			wait = b.waitLocked()
		}
		b.mu.Unlock()
		if state != Open {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		b.probe(ctx)
	}
}

// probe runs the probe function, or lets a trial through.
func (b *Breaker) probe(ctx context.Context) {
	if b.cfg.Probe == nil {
		b.mu.Lock()
		if b.state == Open {
			b.setLocked(HalfOpen, nil, 0)
		}
		b.mu.Unlock()
		return
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.ProbeTimeout)
	err := b.runProbe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != Open {
		return
	}
	if err == nil {
		b.setLocked(Closed, nil, 0)
		return
	}
	b.failedN++
	if b.cfg.OnChange != nil {
		b.cfg.OnChange(Change{From: Open, To: Open, Cause: fmt.Errorf("probe: %w", err), Wait: b.waitLocked()})
	}
}

// runProbe calls the probe function; a panic in it is a failed probe.
func (b *Breaker) runProbe(ctx context.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("the probe panicked: %v", v)
		}
	}()
	return b.cfg.Probe(ctx)
}

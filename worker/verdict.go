package worker

import (
	"errors"
	"time"

	"github.com/warrenmq/warren/retry"
)

// Decision is what the worker does with a message after its handler
// returned: its outcome, and for a retry the delay tier, for a dead
// letter the reason.
type Decision struct {
	Outcome Outcome
	// Delay is the tier a retry goes through.
	Delay time.Duration
	// Kind classifies the failure: error, panic, timeout, permanent, decode.
	Kind string
	// Reason says why a message is dead-lettered: permanent, decode or
	// retries_exhausted.
	Reason string
}

// Decide reports what the worker does when a handler returned err on the
// given attempt under policy p (its zero fields take the defaults). It is
// the worker's own verdict, and what workertest reports.
func Decide(err error, attempt int, p retry.Policy) Decision {
	return decide(err, attempt, p.WithDefaults())
}

// decide is the verdict: a handler's error, the attempt it ran on and the
// route's policy (defaults filled) give the outcome, the tier and the
// reason. It does nothing else.
func decide(err error, attempt int, p retry.Policy) Decision {
	if err == nil {
		return Decision{Outcome: OutcomeAck}
	}
	var (
		dis *DiscardError
		ra  *RetryAfterError
	)
	kind := kindOf(err)
	switch {
	case errors.As(err, &dis):
		return Decision{Outcome: OutcomeDiscard}
	case kind == KindUnavailable:
		return Decision{Outcome: OutcomeRetry, Delay: p.Delays[0], Kind: kind}
	case kind == KindPermanent || kind == KindDecode:
		return Decision{Outcome: OutcomeDeadLetter, Kind: kind, Reason: kind}
	case errors.As(err, &ra):
		if attempt >= p.MaxAttempts {
			return Decision{Outcome: OutcomeDeadLetter, Kind: kind, Reason: KindExhausted}
		}
		return Decision{Outcome: OutcomeRetry, Delay: p.TierFor(ra.Delay), Kind: kind}
	}
	delay, ok := p.Next(attempt)
	if !ok {
		return Decision{Outcome: OutcomeDeadLetter, Kind: kind, Reason: KindExhausted}
	}
	return Decision{Outcome: OutcomeRetry, Delay: delay, Kind: kind}
}

// result is a verdict being carried out: the decision, the error behind
// it, and whether a retry spends an attempt (a handler's failure does; a
// message sent round a tier because its claim could not be taken does
// not).
type result struct {
	Decision
	err   error
	spend bool
}

// verdictOf is the result of a handler that returned err.
func verdictOf(err error, attempt int, p retry.Policy) result {
	d := decide(err, attempt, p)
	return result{Decision: d, err: err, spend: err != nil && d.Kind != KindUnavailable}
}

// unspent sends a message round the delay tier without counting an
// attempt: kind says why it could not run now.
func unspent(delay time.Duration, kind string, err error) result {
	return result{Decision: Decision{Outcome: OutcomeRetry, Delay: delay, Kind: kind}, err: err}
}

// deadLetter is a message that must not run: kind is the reason too.
func deadLetter(kind string, err error) result {
	return result{Decision: Decision{Outcome: OutcomeDeadLetter, Kind: kind, Reason: kind}, err: err}
}

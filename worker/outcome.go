package worker

import (
	"errors"
	"fmt"
	"time"
)

// Outcome is what happened to a message, as logged in the "outcome" field.
type Outcome string

// Outcomes.
const (
	OutcomeAck        Outcome = "ack"
	OutcomeRetry      Outcome = "retry"
	OutcomeDeadLetter Outcome = "dead_letter"
	OutcomeDuplicate  Outcome = "duplicate"
	OutcomeDiscard    Outcome = "discard"
	OutcomeRequeue    Outcome = "requeue"
)

// Error kinds, written to dead letters in the warren-error-kind header.
const (
	KindError       = "error"
	KindPanic       = "panic"
	KindTimeout     = "timeout"
	KindPermanent   = "permanent"
	KindDecode      = "decode"
	KindExhausted   = "retries_exhausted"
	KindBadAttempt  = "invalid_attempt"
	KindUnpublished = "copy_failed"
	KindTooLarge    = "too_large"         // the broker refuses copies of the message: its body is over max_message_size
	KindDedupe      = "dedupe_error"      // the dedupe store refused the claim
	KindStoreDown   = "store_unavailable" // retried without an attempt: the store is down
	KindInProgress  = "in_progress"       // retried without an attempt: claimed elsewhere
)

// PermanentError marks a failure that no retry can fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + errText(e.Err) }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent: the message is dead-lettered at once.
func Permanent(err error) error { return &PermanentError{Err: err} }

// RetryAfterError asks for a retry no sooner than Delay.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("retry after %s: %s", e.Delay, errText(e.Err))
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter asks for a retry through the smallest delay tier >= d.
func RetryAfter(d time.Duration, err error) error { return &RetryAfterError{Delay: d, Err: err} }

// DiscardError marks a message to drop: it is acked and logged.
type DiscardError struct{ Err error }

func (e *DiscardError) Error() string { return "discard: " + errText(e.Err) }
func (e *DiscardError) Unwrap() error { return e.Err }

// Discard acks the message and logs err; nothing is kept.
func Discard(err error) error { return &DiscardError{Err: err} }

// PanicError is a recovered handler panic; it is retried like any error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// DecodeError is a message body that a typed handler could not decode.
// It is permanent.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "decoding message body: " + errText(e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// timeoutError is a handler that ran out of time.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("handler timed out after %s: %v", e.after, e.err)
}
func (e *timeoutError) Unwrap() error { return e.err }

// kindOf classifies a handler error.
func kindOf(err error) string {
	var (
		pe *PanicError
		de *DecodeError
		pm *PermanentError
		te *timeoutError
	)
	switch {
	case errors.As(err, &pe):
		return KindPanic
	case errors.As(err, &de):
		return KindDecode
	case errors.As(err, &pm):
		return KindPermanent
	case errors.As(err, &te):
		return KindTimeout
	}
	return KindError
}

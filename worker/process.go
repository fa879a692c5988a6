package worker

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
)

// decision is what to do with a message after its handler ran.
type decision struct {
	outcome Outcome
	delay   time.Duration // retry: the tier
	spend   bool          // retry: count an attempt
	kind    string        // failure kind
	reason  string        // dead letter: why
	err     error
	release func() // gives up the dedupe claim, once the result is stored
	stale   bool   // the ack was dropped: the channel closed meanwhile
	// doneOwner is set on a success under a claim whose done mark is
	// still to be stored, by the finisher.
	doneOwner string
}

// job is one delivery on its way through the pool.
type job struct {
	bd    *broker.Delivery
	d     *Delivery
	start time.Time
	aerr  error // the attempt header is invalid
	// A claim taken before dispatch (by the claimer, batched).
	claimed   bool
	claimedAt time.Time
	owner     string
	status    dedupe.Status
	cerr      error
}

// prepare builds the job of a delivery.
func (r *runner) prepare(bd *broker.Delivery) *job {
	r.inFlight.Inc()
	j := &job{bd: bd, d: r.delivery(bd), start: time.Now()}
	j.d.Attempt, j.aerr = retry.Attempt(bd.Headers)
	if j.aerr != nil {
		j.d.Attempt = 1
	}
	return j
}

// process walks one message from delivery to settlement.
func (r *runner) process(hctx context.Context, j *job) {
	var dec decision
	switch {
	case j.aerr != nil:
		dec = decision{outcome: OutcomeDeadLetter, kind: KindBadAttempt, reason: KindBadAttempt, err: j.aerr}
	case r.store != nil:
		dec = r.processClaimed(hctx, j)
	default:
		dec = r.decide(r.call(hctx, j.d), j.d.Attempt)
	}
	if dec.doneOwner != "" {
		// Success under a claim: the finisher stores the done mark,
		// batched with others, and only then acks.
		r.fin.add(finishJob{bd: j.bd, d: j.d, dec: dec, start: j.start})
		return
	}
	r.complete(hctx, j.bd, j.d, dec, j.start)
}

// complete settles a message and records its outcome.
func (r *runner) complete(hctx context.Context, bd *broker.Delivery, d *Delivery, dec decision, start time.Time) {
	final := r.settle(hctx, bd, d, dec)
	took := time.Since(start)
	r.inFlight.Dec()
	r.metrics.observe(final, took)
	r.logEvent(d, final, took)
}

// processClaimed runs the handler under a dedupe claim.
func (r *runner) processClaimed(hctx context.Context, j *job) decision {
	d := j.d
	owner, status, err := j.owner, j.status, j.cerr
	if !j.claimed {
		owner = broker.NewMessageID()
		status, err = r.store.Claim(hctx, d.IdempotencyKey, owner, r.w.cfg.DedupeLease)
	} else if err == nil && status == dedupe.Claimed && time.Since(j.claimedAt) > r.w.cfg.DedupeLease/2 {
		// It waited long for a handler: renew the claim before running.
		if err = r.store.Extend(hctx, d.IdempotencyKey, owner, r.w.cfg.DedupeLease); errors.Is(err, dedupe.ErrNotOwner) {
			status, err = dedupe.InProgress, nil
		}
	}
	down := dedupe.Unavailable(err)
	r.w.health.storeResult(down)
	switch {
	case err != nil && !down:
		// The store answered, with a refusal no retry changes.
		return decision{outcome: OutcomeDeadLetter, kind: KindDedupe, reason: KindDedupe, err: err}
	case err != nil && r.w.cfg.DedupeFailOpen:
		r.log.Warn("dedupe store unreachable, processing without a claim", zap.Error(err))
		return r.decide(r.call(hctx, d), d.Attempt)
	case err != nil:
		return r.backoffUnspent(r.route.Retry.Delays[0], err, KindStoreDown)
	case status == dedupe.Done:
		return decision{outcome: OutcomeDuplicate}
	case status == dedupe.InProgress:
		return r.backoffUnspent(r.route.Retry.Delays[0], errors.New("message is being processed elsewhere"), KindInProgress)
	}
	var tx *txWrites
	callCtx := hctx
	if _, ok := r.store.(dedupe.TxStore); ok {
		tx = &txWrites{key: d.IdempotencyKey}
		callCtx = context.WithValue(hctx, txKey{}, tx)
	}
	stop := r.keepClaim(d.IdempotencyKey, owner)
	dec := r.decide(r.call(callCtx, d), d.Attempt)
	stop()
	if dec.outcome == OutcomeAck && tx != nil && !tx.empty() {
		if dec = r.commitDone(hctx, d, owner, tx); dec.outcome == OutcomeAck {
			return dec
		}
	} else if dec.outcome == OutcomeAck {
		dec.doneOwner = owner
		return dec
	}
	// Release after the copy is stored, so that a redelivery of this
	// message meanwhile still finds the claim.
	dec.release = func() {
		rctx, cancel := releaseContext(hctx)
		defer cancel()
		r.release(rctx, d.IdempotencyKey, owner)
	}
	return dec
}

// backoffUnspent sends the message round a delay tier without counting an
// attempt.
func (r *runner) backoffUnspent(delay time.Duration, err error, why string) decision {
	return decision{outcome: OutcomeRetry, delay: delay, kind: why, err: err}
}

// call runs the handler with its timeout, recovering a panic.
func (r *runner) call(hctx context.Context, d *Delivery) (err error) {
	ctx, cancel := context.WithTimeout(hctx, r.route.Timeout)
	defer cancel()
	ctx = withLogger(ctx, r.log, d)
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
			r.log.Error("handler panicked", append(messageFields(d), zap.Any("panic", v), zap.ByteString("stack", err.(*PanicError).Stack))...)
		}
	}()
	err = r.h.Handle(ctx, d)
	if err != nil && ctx.Err() == context.DeadlineExceeded && hctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = &timeoutError{after: r.route.Timeout, err: err}
	}
	return err
}

// decide maps a handler result to a decision.
func (r *runner) decide(err error, attempt int) decision {
	return decideFor(err, attempt, r.route.Retry)
}

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
// given attempt under policy p. It is what workertest uses to show a
// handler's effect on its message.
func Decide(err error, attempt int, p retry.Policy) Decision {
	d := decideFor(err, attempt, p.WithDefaults())
	return Decision{Outcome: d.outcome, Delay: d.delay, Kind: d.kind, Reason: d.reason}
}

func decideFor(err error, attempt int, p retry.Policy) decision {
	if err == nil {
		return decision{outcome: OutcomeAck}
	}
	var (
		dis *DiscardError
		ra  *RetryAfterError
	)
	kind := kindOf(err)
	switch {
	case errors.As(err, &dis):
		return decision{outcome: OutcomeDiscard, err: err}
	case kind == KindPermanent || kind == KindDecode:
		return decision{outcome: OutcomeDeadLetter, kind: kind, reason: kind, err: err}
	case errors.As(err, &ra):
		if attempt >= p.MaxAttempts {
			return decision{outcome: OutcomeDeadLetter, kind: kind, reason: KindExhausted, err: err}
		}
		return decision{outcome: OutcomeRetry, delay: p.TierFor(ra.Delay), spend: true, kind: kind, err: err}
	}
	delay, ok := p.Next(attempt)
	if !ok {
		return decision{outcome: OutcomeDeadLetter, kind: kind, reason: KindExhausted, err: err}
	}
	return decision{outcome: OutcomeRetry, delay: delay, spend: true, kind: kind, err: err}
}

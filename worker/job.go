package worker

import (
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
)

// job is one delivery on its walk through a route's stages: intake
// builds it and claims it, execute runs its handler, settle or finish
// settles it. What a stage learns about the message's claim and
// settlement is kept here; the verdict says only what the handler's
// result means.
type job struct {
	bd    *broker.Delivery
	d     *Delivery // the handler's view of bd: &view
	view  Delivery
	start time.Time
	aerr  error // the attempt header is invalid
	perr  error // a route callback panicked on it (*CallbackPanicError)

	// The dedupe claim: taken by intake (claimed), or by execute for a
	// job that intake did not claim.
	claimed   bool
	parked    bool // it waited for another owner's claim (holder.go)
	claimedAt time.Time
	owner     string
	status    dedupe.Status
	cerr      error
	claim     *heldClaim // renewed by the route's keeper while held

	// holds: the claim is this job's until it is settled; release it once
	// what replaces the message is stored. markDone: the handler
	// succeeded under the claim, so finish stores the done mark, then
	// acks.
	holds    bool
	markDone bool
	// stale: the message's channel closed before its result was sent;
	// the broker redelivers it.
	stale bool

	// span is the handler run's consumer span, nil with tracing off.
	// marked and markErr: finish tried to store the done mark, with
	// this result.
	span    trace.Span
	marked  bool
	markErr error

	// hctx is the handler run's context (deadlines.start).
	hctx handlerCtx
}

// newJob builds the job of a delivery, with its handler's view, in one
// allocation.
func newJob(bd *broker.Delivery, view func(*Delivery, *broker.Delivery) error) *job {
	j := &job{bd: bd, start: time.Now()}
	j.d = &j.view
	j.perr = view(j.d, bd)
	j.d.Attempt, j.aerr = retry.Attempt(bd.Headers)
	if j.aerr != nil {
		j.d.Attempt = 1
	}
	return j
}

// decidedByClaim reports whether intake's claim already says the
// handler will not run now: the message is done, or held elsewhere.
func (j *job) decidedByClaim() bool {
	return j.claimed && j.cerr == nil && (j.status == dedupe.Done || j.status == dedupe.InProgress)
}

// ownClaim reports whether intake took the job's claim and holds it.
func (j *job) ownClaim() bool {
	return j.claimed && j.cerr == nil && j.status == dedupe.Claimed
}

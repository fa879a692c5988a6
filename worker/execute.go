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

// storeHealth is told whether the dedupe store answered its last call.
type storeHealth interface{ storeResult(down bool) }

// executor is the second stage: it runs a job's handler (under its dedupe
// claim when dedupe is on) and reaches the verdict.
type executor struct {
	handler Handler
	timeout time.Duration
	policy  retry.Policy
	log     *zap.Logger
	// deadlines gives the handler runs their contexts; nil: each gets
	// context.WithTimeout's.
	deadlines *deadlines

	// With dedupe on: the route's claims, the done marks' TTL for a
	// handler's committed writes, what to do while the store is down,
	// and where the store's answers are reported.
	claims   *claims
	ttl      time.Duration
	failOpen bool
	health   storeHealth
}

// execute walks a job from its claim to its verdict.
func (e *executor) execute(hctx context.Context, j *job) result {
	switch {
	case j.aerr != nil:
		return deadLetter(KindBadAttempt, j.aerr)
	case j.perr != nil:
		e.logCallbackPanic(j.d, j.perr)
		return deadLetter(KindPanic, j.perr)
	case e.claims != nil:
		return e.underClaim(hctx, j)
	default:
		return verdictOf(e.call(hctx, j), j.d.Attempt, e.policy)
	}
}

// underClaim runs the handler under the job's dedupe claim. A success
// leaves the done mark to finish (j.markDone); any other result leaves
// the claim for settle to release once the message's copy is stored
// (j.holds), so that a redelivery meanwhile still finds it.
func (e *executor) underClaim(hctx context.Context, j *job) result {
	status, err := e.claim(hctx, j)
	down := dedupe.Unavailable(err)
	e.health.storeResult(down)
	switch {
	case err != nil && !down:
		// The store answered, with a refusal no retry changes.
		return deadLetter(KindDedupe, err)
	case err != nil && e.failOpen:
		e.log.Warn("dedupe store unreachable, processing without a claim", zap.Error(err))
		return verdictOf(e.call(hctx, j), j.d.Attempt, e.policy)
	case err != nil:
		return unspent(e.policy.Delays[0], KindStoreDown, err)
	case status == dedupe.Done:
		return result{Decision: Decision{Outcome: OutcomeDuplicate}}
	case status == dedupe.InProgress:
		delay := e.policy.WaitTier(int(inProgressRounds(j.d.Headers))+1, e.claims.lease)
		return unspent(delay, KindInProgress, errors.New("message is being processed elsewhere"))
	}
	j.holds = true
	var tx *txWrites
	ctx := hctx
	if e.claims.tx != nil {
		tx = &txWrites{key: j.d.IdempotencyKey}
		ctx = context.WithValue(hctx, txKey{}, tx)
	}
	res := verdictOf(e.call(ctx, j), j.d.Attempt, e.policy)
	if res.Outcome != OutcomeAck {
		return res
	}
	if tx != nil && !tx.empty() {
		if res = e.commit(hctx, j, tx); res.Outcome == OutcomeAck {
			j.holds = false
			e.claims.settled(j)
		}
		return res
	}
	j.holds, j.markDone = false, true
	return res
}

// claim is the job's claim: the one intake took (which the keeper renews
// while the job waits for a handler, and confirms before it runs), or one
// taken now.
func (e *executor) claim(hctx context.Context, j *job) (dedupe.Status, error) {
	if !j.claimed {
		j.owner = broker.NewMessageID()
		j.claimed, j.claimedAt = true, time.Now()
		j.status, j.cerr = e.claims.store.Claim(hctx, j.d.IdempotencyKey, j.owner, e.claims.lease)
		if j.ownClaim() {
			e.claims.hold(j, j.claimedAt)
		}
		return j.status, j.cerr
	}
	if !j.ownClaim() {
		return j.status, j.cerr
	}
	err := e.claims.keeper.confirm(hctx, j.claim)
	switch {
	case err == nil:
		return dedupe.Claimed, nil
	case errors.Is(err, dedupe.ErrNotOwner):
		// It lapsed or was lost while the job waited: someone else may
		// have taken it since.
		e.claims.settled(j)
		return dedupe.InProgress, nil
	default:
		e.claims.settled(j)
		return 0, err
	}
}

// call runs the handler with its timeout, recovering a panic. It is the
// handler call of the worker and of workertest alike.
func (e *executor) call(hctx context.Context, j *job) (err error) {
	d := j.d
	ctx, finish := e.deadlines.start(hctx, e.timeout, e.log, d, &j.hctx)
	defer finish()
	defer func() {
		if v := recover(); v != nil {
			pe := &PanicError{Value: v, Stack: debug.Stack()}
			err = pe
			e.log.Error("handler panicked", append(messageFields(d), zap.Any("panic", v), zap.ByteString("stack", pe.Stack))...)
		}
	}()
	err = e.handler.Handle(ctx, d)
	if err != nil && ctx.Err() == context.DeadlineExceeded && hctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = &timeoutError{after: e.timeout, err: err}
	}
	return err
}

// logCallbackPanic logs a route callback's panic with its stack.
func (e *executor) logCallbackPanic(d *Delivery, err error) {
	var pe *CallbackPanicError
	if errors.As(err, &pe) {
		e.log.Error("route callback panicked", append(messageFields(d), zap.String("callback", pe.Callback),
			zap.Any("panic", pe.Value), zap.ByteString("stack", pe.Stack))...)
	}
}

// commit commits the handler's queued writes with the done mark. When
// that cannot happen the writes are not applied, so the message must run
// again: it is requeued (the attempt is not spent).
func (e *executor) commit(hctx context.Context, j *job, tx *txWrites) result {
	store := e.claims.tx
	var res result
	withRetries(hctx, commitRetries, func() bool {
		err := store.MarkDoneWith(hctx, j.d.IdempotencyKey, j.owner, e.ttl, tx.all)
		down := dedupe.Unavailable(err)
		e.health.storeResult(down)
		var partial *dedupe.PartialCommitError
		switch {
		case err == nil:
			res = result{Decision: Decision{Outcome: OutcomeAck}}
		case errors.As(err, &partial):
			// The done mark committed: the message is done, and running
			// it again would be refused as a duplicate. Say loudly what
			// was lost.
			e.log.Error("the message is done, but some of its writes failed in the commit and are lost",
				append(messageFields(j.d), zap.Error(err))...)
			res = result{Decision: Decision{Outcome: OutcomeAck}}
		case errors.Is(err, dedupe.ErrNotOwner):
			res = requeue(KindInProgress, errors.New("dedupe claim lost before the commit; the handler's writes were not applied"))
		case !down:
			// The writes themselves failed: a handler failure.
			res = verdictOf(err, j.d.Attempt, e.policy)
		default:
			res = requeue(KindStoreDown, err)
			return true
		}
		return false
	})
	return res
}

// requeue puts a message back on its queue as it is: it must run again,
// and no attempt is spent.
func requeue(kind string, err error) result {
	return result{Decision: Decision{Outcome: OutcomeRequeue, Kind: kind}, err: err}
}

// ExecuteOptions tune Execute.
type ExecuteOptions struct {
	// Policy is the route's retry policy; zero fields take the defaults.
	Policy retry.Policy
	// Timeout bounds the handler run. 0 means DefaultHandlerTimeout.
	Timeout time.Duration
	// Store, when set, runs the handler under a claim on the delivery's
	// IdempotencyKey as a worker with dedupe on does: a message marked
	// done is a duplicate and its handler does not run, a success is
	// marked done, and with a transactional store (the Redis store) the
	// writes given to CommitWithDone are committed with the done mark.
	// nil means dedupe off.
	Store dedupe.Store
	// DedupeTTL is how long a done mark is kept. 0 means DefaultDedupeTTL.
	DedupeTTL time.Duration
	// DedupeLease is the claim's lease, renewed while the handler runs,
	// and what a message in progress elsewhere waits on (its tier).
	// 0 means DefaultDedupeLease.
	DedupeLease time.Duration
	// Logger receives the handler's logs. nil means none.
	Logger *zap.Logger
}

// Execution is what Execute found.
type Execution struct {
	// Decision is what a worker would do with the message.
	Decision
	// Err is the error behind the decision: what the handler returned (a
	// *PanicError after a panic), or what the store answered.
	Err error
	// Duration is how long the execution took.
	Duration time.Duration
}

// Execute runs h on d through the worker's own execute stage (the
// handler's timeout and logger, panic recovery, the dedupe claim and the
// commit) and reports the verdict without a broker: nothing is published
// or acked. It is what workertest.Run calls; d.Attempt and
// d.IdempotencyKey are used as given.
func Execute(ctx context.Context, h Handler, d *Delivery, o ExecuteOptions) Execution {
	e := o.executor(h)
	if e.claims != nil {
		// The claim is renewed while the handler runs, as in a worker.
		kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); e.claims.keeper.run(kctx) }()
		defer func() { cancel(); <-done }()
	}
	start := time.Now()
	j := &job{d: d, start: start}
	res := e.execute(ctx, j)
	switch {
	case j.markDone:
		err := e.claims.store.MarkDone(context.WithoutCancel(ctx), d.IdempotencyKey, j.owner, e.ttl)
		if err != nil {
			e.log.Warn("done mark not stored", zap.Error(err))
		}
		e.claims.settled(j)
	case j.holds:
		e.claims.release(context.WithoutCancel(ctx), j)
	}
	return Execution{Decision: res.Decision, Err: res.err, Duration: time.Since(start)}
}

// executor is the execute stage that Execute runs, o's defaults filled.
func (o ExecuteOptions) executor(h Handler) *executor {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	e := &executor{handler: h, timeout: o.Timeout, policy: o.Policy.WithDefaults(), log: log,
		ttl: o.DedupeTTL, health: &health{}}
	if e.timeout == 0 {
		e.timeout = DefaultHandlerTimeout
	}
	if e.ttl == 0 {
		e.ttl = DefaultDedupeTTL
	}
	if o.Store != nil {
		lease := o.DedupeLease
		if lease == 0 {
			lease = DefaultDedupeLease
		}
		store := batchStore(o.Store)
		e.claims = &claims{store: store, tx: txStoreOf(o.Store), lease: lease, log: log,
			keeper: newKeeper(store, lease, log, e.health)}
	}
	return e
}

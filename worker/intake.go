package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// maxClaimBatch bounds how many deliveries are claimed in one round trip.
const maxClaimBatch = 64

// claimBatchSize is how many deliveries intake claims at once: a quarter
// of the prefetch window left beside the running handlers, at least one
// per handler and at most maxClaimBatch. It hands a batch out through a
// buffer of the same size and claims the next one meanwhile, so the
// store's round trip overlaps the handlers' work, and with fast handlers
// one round trip serves many runs. Half the window beside the handlers
// stays for finished messages waiting for their done marks and acks (see
// the ack batch in Worker.consume), so that the claims ahead never hold
// the window shut. Claimed messages waiting for a handler are renewed by
// the keeper like running ones.
func claimBatchSize(concurrency, prefetch int) int {
	return max(1, min(maxClaimBatch, max(concurrency, (prefetch-concurrency)/4)))
}

// claims takes, renews and gives up a route's dedupe claims.
type claims struct {
	store  dedupe.BatchStore
	tx     dedupe.TxStore // the store's transactional done mark; nil if none
	lease  time.Duration
	log    *zap.Logger
	keeper *keeper // renews what is held
}

// hold has the keeper renew j's claim from now on.
func (c *claims) hold(j *job, when time.Time) {
	if c.keeper != nil {
		j.claim = c.keeper.hold(j.d.IdempotencyKey, j.owner, when)
	}
}

// settled stops renewing j's claim: it is released or marked done.
func (c *claims) settled(j *job) {
	if c.keeper != nil {
		c.keeper.drop(j.claim)
	}
}

// claimAll claims every job of batch that can run in one round trip.
func (c *claims) claimAll(ctx context.Context, batch []*job) {
	reqs := make([]dedupe.Ref, 0, len(batch))
	picked := make([]*job, 0, len(batch))
	for _, j := range batch {
		if j.aerr != nil || j.perr != nil || j.bd.Stale() {
			continue
		}
		j.owner = broker.NewMessageID()
		reqs = append(reqs, dedupe.Ref{Key: j.d.IdempotencyKey, Owner: j.owner})
		picked = append(picked, j)
	}
	if len(reqs) == 0 {
		return
	}
	now := time.Now()
	for i, res := range c.store.ClaimAll(ctx, reqs, c.lease) {
		j := picked[i]
		j.claimed, j.status, j.cerr, j.claimedAt = true, res.Status, res.Err, now
		if j.ownClaim() {
			c.hold(j, now)
		}
	}
}

// release gives up j's claim, so that the message can run elsewhere at
// once instead of after the lease.
func (c *claims) release(ctx context.Context, j *job) {
	c.settled(j)
	if err := c.store.Release(ctx, j.d.IdempotencyKey, j.owner); err != nil && !errors.Is(err, dedupe.ErrNotOwner) {
		c.log.Warn("dedupe release failed; the claim expires with its lease", zap.Error(err))
	}
}

// releaseUnstarted gives up, under ctx, the claim intake took for a job
// that will not run.
func (c *claims) releaseUnstarted(ctx context.Context, j *job) {
	if c != nil && j.ownClaim() {
		c.release(ctx, j)
	}
}

// intake is the first stage: it takes a route's deliveries from the
// consumer, builds their jobs and, with dedupe on, claims them in
// batches before any handler takes them, so that handlers do not wait on
// the store before they run. Once the drain begins (stopping closed) it
// claims nothing more: the deliveries it holds, the jobs waiting in the
// hand-out buffer and what the consumer still hands out go back to the
// queue at once, their claims released.
type intake struct {
	deliveries <-chan *broker.Delivery
	view       func(*Delivery, *broker.Delivery) error
	claims     *claims // nil when dedupe is off
	batch      int
	stopping   <-chan struct{}
	inFlight   interface{ Inc() }
	giveBack   func(ctx context.Context, jobs []*job)
}

// prepare builds the job of a delivery and counts it in flight.
func (in *intake) prepare(bd *broker.Delivery) *job {
	in.inFlight.Inc()
	return newJob(bd, in.view)
}

// run hands claimed jobs out on out until the consumer stops or the
// drain begins; it closes out when it returns.
func (in *intake) run(hctx context.Context, out chan *job) {
	defer close(out)
	batch := make([]*job, 0, in.batch)
	for bd := range in.deliveries {
		batch = in.fill(append(batch[:0], in.prepare(bd)))
		if in.draining() {
			in.drain(hctx, batch, out)
			return
		}
		in.claims.claimAll(hctx, batch)
		for i, j := range batch {
			select {
			case out <- j:
			case <-in.stopping:
				in.drain(hctx, batch[i:], out)
				return
			}
		}
	}
	// The consumer stopped: the drain has begun.
	in.drain(hctx, nil, out)
}

// fill adds the deliveries at hand to batch, up to its size.
func (in *intake) fill(batch []*job) []*job {
	for len(batch) < in.batch {
		select {
		case bd, ok := <-in.deliveries:
			if !ok {
				return batch
			}
			batch = append(batch, in.prepare(bd))
		default:
			return batch
		}
	}
	return batch
}

// drain gives back the jobs intake holds and those waiting in the
// hand-out buffer (a handler may take some of them at the same time and
// give them back itself), and requeues what the consumer still hands out
// until it stops.
func (in *intake) drain(hctx context.Context, held []*job, out chan *job) {
	rctx, cancel := releaseContext(hctx)
	defer cancel()
	in.giveBack(rctx, held)
	for {
		select {
		case j := <-out:
			in.giveBack(rctx, []*job{j})
		default:
			for bd := range in.deliveries {
				_ = bd.Nack(true)
			}
			return
		}
	}
}

// draining reports whether the drain has begun.
func (in *intake) draining() bool {
	select {
	case <-in.stopping:
		return true
	default:
		return false
	}
}

// lateReleaseTimeout bounds the releases that come after the drain ran out
// of time, all of one call of releaseContext together.
const lateReleaseTimeout = time.Second

// releaseContext is the context for giving up claims: hctx while it lives;
// once the drain ran out of time and cancelled it, a context that still
// lets the releases through for lateReleaseTimeout, so that a shutdown
// with Redis unreachable is not held up by them.
func releaseContext(hctx context.Context) (context.Context, context.CancelFunc) {
	if hctx.Err() == nil {
		return hctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(hctx), lateReleaseTimeout)
}

// keeperOf is the keeper renewing c's claims, nil without one.
func (c *claims) keeperOf() *keeper {
	if c == nil {
		return nil
	}
	return c.keeper
}

// lostReason says why j's claim was gone when its done mark was stored.
func (c *claims) lostReason(j *job) string {
	if c.keeper == nil {
		return "the claim was lost or expired"
	}
	return c.keeper.lostReason(j.claim)
}

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

// claimLoop sits between the consumer and the handlers when the dedupe
// store can batch: it takes the deliveries that are there, claims them
// all in one round trip, and hands them to the handlers, so that handlers
// do not wait on Redis before they run. Once the drain begins (stopping
// closed), it claims nothing more: the deliveries it holds, the jobs
// waiting in the hand-out buffer and what the consumer still hands out go
// back to the queue at once, their claims released.
func (r *runner) claimLoop(hctx context.Context, store dedupe.BatchStore, out chan *job) {
	defer close(out)
	in := r.cons.Deliveries()
	size := claimBatchSize(r.route.Concurrency)
	batch := make([]*job, 0, size)
	for bd := range in {
		batch = append(batch[:0], r.prepare(bd))
	more:
		for len(batch) < size {
			select {
			case bd, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, r.prepare(bd))
			default:
				break more
			}
		}
		if r.draining() {
			r.drainClaimer(hctx, batch, in, out)
			return
		}
		r.claimAll(hctx, store, batch)
		for i, j := range batch {
			select {
			case out <- j:
			case <-r.stopping:
				r.drainClaimer(hctx, batch[i:], in, out)
				return
			}
		}
	}
	// The consumer stopped: the drain has begun.
	r.drainClaimer(hctx, nil, in, out)
}

// drainClaimer gives back the jobs the claimer holds and those waiting in
// the hand-out buffer (a handler may take some of them at the same time
// and give them back itself), and requeues what the consumer still hands
// out until it stops.
func (r *runner) drainClaimer(hctx context.Context, held []*job, in <-chan *broker.Delivery, out chan *job) {
	rctx, cancel := releaseContext(hctx)
	defer cancel()
	r.giveBack(rctx, held)
buffered:
	for {
		select {
		case j := <-out:
			r.giveBack(rctx, []*job{j})
		default:
			break buffered
		}
	}
	for bd := range in {
		_ = bd.Nack(true)
	}
}

// claimBatchSize is how many deliveries the claimer claims at once: one
// handler's worth. The claimer hands a batch out through a buffer of the
// same size and claims the next one meanwhile, so its round trip overlaps
// the handlers' work; at most two handlers' worth of claimed messages wait
// for a free handler, so none waits longer than about two handler runs.
func claimBatchSize(concurrency int) int { return min(maxClaimBatch, concurrency) }

func (r *runner) claimAll(hctx context.Context, store dedupe.BatchStore, batch []*job) {
	reqs := make([]dedupe.Ref, 0, len(batch))
	picked := make([]*job, 0, len(batch))
	for _, j := range batch {
		if j.aerr != nil || j.bd.Stale() {
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
	for i, res := range store.ClaimAll(hctx, reqs, r.w.cfg.DedupeLease) {
		picked[i].claimed, picked[i].status, picked[i].cerr = true, res.Status, res.Err
		picked[i].claimedAt = now
	}
}

// giveBack requeues jobs that no handler started and releases their
// claims under ctx (see releaseContext).
func (r *runner) giveBack(ctx context.Context, jobs []*job) {
	for _, j := range jobs {
		r.releaseIfClaimed(ctx, j)
		_ = j.bd.Nack(true)
		r.inFlight.Dec()
	}
}

// releaseIfClaimed gives up, under ctx, a claim taken for a job that will
// not run.
func (r *runner) releaseIfClaimed(ctx context.Context, j *job) {
	if !j.claimed || j.cerr != nil || j.status != dedupe.Claimed {
		return
	}
	r.release(ctx, j.d.IdempotencyKey, j.owner)
}

// release gives up a dedupe claim, so that the message can run elsewhere
// at once instead of after the lease.
func (r *runner) release(ctx context.Context, key, owner string) {
	if err := r.store.Release(ctx, key, owner); err != nil && !errors.Is(err, dedupe.ErrNotOwner) {
		r.log.Warn("dedupe release failed; the claim expires with its lease", zap.Error(err))
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

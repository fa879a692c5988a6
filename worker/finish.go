package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dedupe"
)

// maxFinishBatch bounds how many done marks share one round trip.
const maxFinishBatch = 128

// doneMarker marks many claims done in one call.
type doneMarker interface {
	MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error
}

// finisher is the last stage of a success under dedupe: it stores the
// done marks of successful messages in batches and acks each message
// after its mark is stored. Handlers hand a success over and take the
// next message at once, so a message under dedupe costs its handler one
// Redis round trip (the claim), not two. It ends once its input is closed
// (after every handler returned) and it has finished what it was handed.
type finisher struct {
	store  doneMarker
	claims *claims // the route's, to stop renewing what is marked
	ttl    time.Duration
	log    *zap.Logger
	health storeHealth
	// complete settles a job whose mark was stored (or given up on).
	complete func(hctx context.Context, j *job, res result)

	in   chan finishJob
	done chan struct{}
	once sync.Once
}

type finishJob struct {
	j   *job
	res result
}

// newFinisher readies f, its dependencies set, with room for buffer
// successes waiting for their marks.
func newFinisher(f *finisher, buffer int) *finisher {
	f.in = make(chan finishJob, buffer)
	f.done = make(chan struct{})
	return f
}

func (f *finisher) add(j *job, res result) { f.in <- finishJob{j, res} }

// stop waits for the finisher to finish what it was handed. Call it after
// every handler has returned.
func (f *finisher) stop() {
	f.once.Do(func() { close(f.in) })
	<-f.done
}

func (f *finisher) run(hctx context.Context) {
	defer close(f.done)
	batch := make([]finishJob, 0, maxFinishBatch)
	for fj := range f.in {
		batch = append(batch[:0], fj)
	more:
		for len(batch) < maxFinishBatch {
			select {
			case fj, ok := <-f.in:
				if !ok {
					break more
				}
				batch = append(batch, fj)
			default:
				break more
			}
		}
		f.flush(hctx, batch)
	}
}

// flush stores the batch's done marks, trying failed ones again a few
// times, then acks every message. A message whose mark could not be
// stored is acked all the same (its effect has happened; redelivering it
// would repeat the effect), with a warning.
func (f *finisher) flush(hctx context.Context, batch []finishJob) {
	reqs := make([]dedupe.Ref, len(batch))
	for i, fj := range batch {
		// A claim the worker knows it holds is marked without the
		// store's owner comparison (a SET XX GET on Redis).
		reqs[i] = dedupe.Ref{Key: fj.j.d.IdempotencyKey, Owner: fj.j.owner, Held: f.claims.keeper.fresh(fj.j.claim)}
	}
	errs := f.markAll(hctx, reqs)
	for i, fj := range batch {
		switch err := errs[i]; {
		case errors.Is(err, dedupe.ErrMarkedOver):
			f.log.Warn("done mark stored over another owner's claim: "+f.claims.lostReason(fj.j), zap.String("key", reqs[i].Key))
		case errors.Is(err, dedupe.ErrNotOwner):
			f.log.Warn("done mark not stored: "+f.claims.lostReason(fj.j), zap.String("key", reqs[i].Key))
		case err != nil:
			f.log.Warn("done mark not stored; a duplicate of this message will run again", zap.String("key", reqs[i].Key), zap.Error(err))
		}
		f.claims.settled(fj.j)
		fj.j.markDone, fj.j.marked, fj.j.markErr = false, true, errs[i]
		f.complete(hctx, fj.j, fj.res)
	}
}

// markAll stores the marks, trying those that found the store
// unavailable again. Marks are stored even after the drain ran out of time
// and cancelled the handlers: their successes are final. The store bounds
// each call.
func (f *finisher) markAll(hctx context.Context, reqs []dedupe.Ref) []error {
	sctx := context.WithoutCancel(hctx)
	errs := make([]error, len(reqs))
	pending := make([]int, len(reqs))
	for i := range pending {
		pending[i] = i
	}
	withRetries(hctx, markRetries, func() bool {
		batch := make([]dedupe.Ref, len(pending))
		for k, i := range pending {
			batch[k] = reqs[i]
			// What was known at the first try may be stale by a retry.
			reqs[i].Held = false
		}
		again := pending[:0]
		for k, err := range f.store.MarkDoneAll(sctx, batch, f.ttl) {
			errs[pending[k]] = err
			if dedupe.Unavailable(err) {
				again = append(again, pending[k])
			}
		}
		pending = again
		f.health.storeResult(len(again) > 0)
		return len(again) > 0
	})
	return errs
}

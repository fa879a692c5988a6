package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// maxFinishBatch bounds how many done marks share one round trip.
const maxFinishBatch = 128

// finisher stores the done marks of successful messages in batches and
// acks each message after its mark is stored. Handlers hand a success
// over and take the next message at once, so a message under dedupe costs
// its handler one Redis round trip (the claim), not two. It is owned by
// its runner: it ends once the handlers have ended and it has finished
// what they handed over.
type finisher struct {
	r     *runner
	store doneMarker
	in    chan finishJob
	done  chan struct{}
	once  sync.Once
}

type finishJob struct {
	bd    *broker.Delivery
	d     *Delivery
	dec   decision
	start time.Time
}

// doneMarker marks many claims done in one call.
type doneMarker interface {
	MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error
}

// doneMarkerOf is store's own batch call, or one MarkDone after another
// for a store that has none.
func doneMarkerOf(store dedupe.Store) doneMarker {
	if bs, ok := store.(dedupe.BatchStore); ok {
		return bs
	}
	return oneByOne{store}
}

type oneByOne struct{ dedupe.Store }

func (o oneByOne) MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = o.MarkDone(ctx, r.Key, r.Owner, ttl)
	}
	return errs
}

func newFinisher(r *runner, store doneMarker) *finisher {
	return &finisher{r: r, store: store, in: make(chan finishJob, r.route.Prefetch), done: make(chan struct{})}
}

func (f *finisher) add(j finishJob) { f.in <- j }

// stop waits for the finisher to finish what it was handed. Call it after
// every handler has returned.
func (f *finisher) stop() {
	f.once.Do(func() { close(f.in) })
	<-f.done
}

func (f *finisher) run(hctx context.Context) {
	defer close(f.done)
	batch := make([]finishJob, 0, maxFinishBatch)
	for j := range f.in {
		batch = append(batch[:0], j)
	more:
		for len(batch) < maxFinishBatch {
			select {
			case j, ok := <-f.in:
				if !ok {
					break more
				}
				batch = append(batch, j)
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
	for i, j := range batch {
		reqs[i] = dedupe.Ref{Key: j.d.IdempotencyKey, Owner: j.dec.doneOwner}
	}
	errs := f.markAll(hctx, reqs)
	for i, j := range batch {
		switch err := errs[i]; {
		case errors.Is(err, dedupe.ErrNotOwner):
			f.r.log.Warn("dedupe claim expired before the handler finished; raise WARREN_DEDUPE_LEASE", zap.String("key", reqs[i].Key))
		case err != nil:
			f.r.log.Warn("done mark not stored; a duplicate of this message will run again", zap.String("key", reqs[i].Key), zap.Error(err))
		}
		j.dec.doneOwner = ""
		f.r.complete(hctx, j.bd, j.d, j.dec, j.start)
	}
}

func (f *finisher) markAll(hctx context.Context, reqs []dedupe.Ref) []error {
	// Marks are stored even after the drain ran out of time and cancelled
	// the handlers: their successes are final. The store bounds each call.
	sctx := context.WithoutCancel(hctx)
	errs := f.store.MarkDoneAll(sctx, reqs, f.r.w.cfg.DedupeTTL)
	wait := 50 * time.Millisecond
	for try := 2; try <= 3; try++ {
		var again []int
		for i, err := range errs {
			if dedupe.Unavailable(err) {
				again = append(again, i)
			}
		}
		f.r.w.health.storeResult(len(again) > 0)
		if len(again) == 0 || hctx.Err() != nil {
			break
		}
		select {
		case <-time.After(wait):
		case <-hctx.Done():
			return errs
		}
		wait *= 4
		retryReqs := make([]dedupe.Ref, len(again))
		for k, i := range again {
			retryReqs[k] = reqs[i]
		}
		for k, err := range f.store.MarkDoneAll(sctx, retryReqs, f.r.w.cfg.DedupeTTL) {
			errs[again[k]] = err
		}
	}
	return errs
}

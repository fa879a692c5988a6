package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dedupe"
)

// keepClaim extends the claim while a handler runs longer than a third of
// the lease. It returns a function that stops it and waits.
func (r *runner) keepClaim(key, owner string) (stop func()) {
	lease := r.w.cfg.DedupeLease
	if lease > r.route.Timeout+5*time.Second {
		return func() {} // the claim outlives any handler run
	}
	return every(lease/3, func(ctx context.Context) {
		err := r.store.Extend(ctx, key, owner, lease)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("extending the dedupe claim failed", zap.String("key", key), zap.Error(err))
		}
	})
}

// every calls fn every interval in a goroutine of its own until the
// returned stop is called; stop waits for it to end.
func every(interval time.Duration, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// commitDone commits the handler's queued writes with the done mark. When
// that cannot happen the writes are not applied, so the message must run
// again: it is requeued (the attempt is not spent).
func (r *runner) commitDone(hctx context.Context, d *Delivery, owner string, tx *txWrites) decision {
	store := r.store.(dedupe.TxStore)
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		err := store.MarkDoneWith(hctx, d.IdempotencyKey, owner, r.w.cfg.DedupeTTL, tx.all)
		down := dedupe.Unavailable(err)
		r.w.health.storeResult(down)
		switch {
		case err == nil:
			return decision{outcome: OutcomeAck}
		case errors.Is(err, dedupe.ErrNotOwner):
			return decision{outcome: OutcomeRequeue, kind: KindInProgress,
				err: errors.New("dedupe claim lost before the commit; the handler's writes were not applied")}
		case !down:
			// The writes themselves failed: a handler failure.
			return r.decide(err, d.Attempt)
		case try == 3:
			return decision{outcome: OutcomeRequeue, kind: KindStoreDown, err: err}
		}
		select {
		case <-time.After(wait):
		case <-hctx.Done():
			return decision{outcome: OutcomeRequeue, kind: KindStoreDown, err: err}
		}
		wait *= 4
	}
}

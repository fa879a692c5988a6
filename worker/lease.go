package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dedupe"
)

// heldClaim is a claim a pipeline holds, from intake's claim until its
// message is settled. Its fields are the keeper's, under its mutex.
type heldClaim struct {
	key, owner string
	renewed    time.Time // last taken or renewed
	gone       string    // why the store no longer has it; "" while held
}

// keeper is a route's heartbeat: every third of the lease it renews every
// claim the route holds (claimed and waiting for a handler, running, or
// waiting for its done mark) in one batch call, so that a claim lapses
// only when its worker is gone (killed, cut off from the store or
// stalled) for a whole lease.
type keeper struct {
	store  dedupe.BatchStore
	lease  time.Duration
	log    *zap.Logger
	health storeHealth

	mu   sync.Mutex
	held map[*heldClaim]struct{}
}

func newKeeper(store dedupe.BatchStore, lease time.Duration, log *zap.Logger, health storeHealth) *keeper {
	return &keeper{store: store, lease: lease, log: log, health: health, held: map[*heldClaim]struct{}{}}
}

// hold starts renewing the claim of key by owner, taken at when.
func (k *keeper) hold(key, owner string, when time.Time) *heldClaim {
	h := &heldClaim{key: key, owner: owner, renewed: when}
	k.mu.Lock()
	k.held[h] = struct{}{}
	k.mu.Unlock()
	return h
}

// holds reports whether a claim of key is renewed here: another delivery
// of the same message holds it in this route.
func (k *keeper) holds(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for h := range k.held {
		if h.key == key {
			return true
		}
	}
	return false
}

// drop stops renewing h.
func (k *keeper) drop(h *heldClaim) {
	if h == nil {
		return
	}
	k.mu.Lock()
	delete(k.held, h)
	k.mu.Unlock()
}

// goneReason says why a claim renewed last at renewed is gone, as found
// at now: it lapsed (not renewed for a whole lease) or the store lost it
// (it was renewed in time; the store restarted or failed over without it).
func (k *keeper) goneReason(renewed, now time.Time) string {
	if since := now.Sub(renewed); since > k.lease {
		return "the claim expired: it was not renewed for " + since.Round(time.Millisecond).String() +
			" (the store was unreachable or the worker stalled), and the message may have run elsewhere;" +
			" check the store and the worker's CPU, or raise WARREN_DEDUPE_LEASE"
	}
	return "the claim was lost with the store (a restart or failover without it) although it was renewed in time;" +
		" the message may run again"
}

// lostReason says why h's claim, which the store refused, is gone: what
// the renewal that found it gone saw, or else what can be told now.
func (k *keeper) lostReason(h *heldClaim) string {
	if h == nil {
		return "the claim was lost"
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if h.gone != "" {
		return h.gone
	}
	return k.goneReason(h.renewed, time.Now())
}

// fresh reports whether h is held on the worker's own evidence: taken or
// renewed within two thirds of a lease, and no renewal found it gone (what
// confirm accepts without asking the store).
func (k *keeper) fresh(h *heldClaim) bool {
	if k == nil || h == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return h.gone == "" && k.recent(h.renewed)
}

// recent reports whether a claim taken or renewed at renewed has at least
// a third of its lease left.
func (k *keeper) recent(renewed time.Time) bool { return time.Since(renewed) < k.lease*2/3 }

// confirm makes sure h is still held before its job runs: a renewal found
// it gone (dedupe.ErrNotOwner), or it was not renewed for two thirds of a
// lease (the store was slow or unreachable), in which case it is renewed
// now and the store's answer returned.
func (k *keeper) confirm(ctx context.Context, h *heldClaim) error {
	k.mu.Lock()
	gone, renewed := h.gone != "", h.renewed
	k.mu.Unlock()
	switch {
	case gone:
		return dedupe.ErrNotOwner
	case k.recent(renewed):
		return nil
	}
	start := time.Now()
	err := k.store.Extend(ctx, h.key, h.owner, k.lease)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err == nil:
		h.renewed = start
	case errors.Is(err, dedupe.ErrNotOwner):
		h.gone = k.goneReason(h.renewed, start)
	}
	return err
}

// run renews the held claims every third of the lease until ctx ends.
func (k *keeper) run(ctx context.Context) {
	t := time.NewTicker(max(k.lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.renew(ctx)
		}
	}
}

// renew extends every held claim in one batch call, bounded by a third of
// a lease so that one slow call does not hold up the next round.
func (k *keeper) renew(ctx context.Context) {
	k.mu.Lock()
	claims := make([]*heldClaim, 0, len(k.held))
	refs := make([]dedupe.Ref, 0, len(k.held))
	for h := range k.held {
		if h.gone == "" {
			claims = append(claims, h)
			refs = append(refs, dedupe.Ref{Key: h.key, Owner: h.owner})
		}
	}
	k.mu.Unlock()
	if len(refs) == 0 {
		return
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, max(k.lease/3, time.Millisecond))
	errs := k.store.ExtendAll(rctx, refs, k.lease)
	cancel()
	if ctx.Err() != nil {
		return
	}
	k.record(claims, errs, start)
}

// record notes what a renewal round found.
func (k *keeper) record(claims []*heldClaim, errs []error, start time.Time) {
	var failed error
	failures, down := 0, false
	k.mu.Lock()
	for i, h := range claims {
		switch err := errs[i]; {
		case err == nil:
			h.renewed = start
		case errors.Is(err, dedupe.ErrNotOwner):
			h.gone = k.goneReason(h.renewed, start)
		default:
			failures, failed = failures+1, err
			down = down || dedupe.Unavailable(err)
		}
	}
	k.mu.Unlock()
	k.health.storeResult(down)
	if failures > 0 {
		k.log.Warn("renewing dedupe claims failed; a claim not renewed within its lease lapses",
			zap.Int("claims", failures), zap.Duration("lease", k.lease), zap.Error(failed))
	}
}

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
// message is settled.
type heldClaim struct {
	key, owner string
	renewed    time.Time // last taken or renewed
	lost       bool      // the store no longer had it on a renewal
}

// keeper is a route's heartbeat: every third of the lease it renews every
// claim the route holds (claimed and waiting for a handler, running, or
// waiting for its done mark), so that a claim lapses only when its worker
// is gone (killed, cut off from the store or stalled) for a whole lease.
type keeper struct {
	store  dedupe.Store
	lease  time.Duration
	log    *zap.Logger
	health storeHealth

	mu   sync.Mutex
	held map[*heldClaim]struct{}
}

func newKeeper(store dedupe.Store, lease time.Duration, log *zap.Logger, health storeHealth) *keeper {
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

// drop stops renewing h.
func (k *keeper) drop(h *heldClaim) {
	if h == nil {
		return
	}
	k.mu.Lock()
	delete(k.held, h)
	k.mu.Unlock()
}

// lostReason says why a claim that the store no longer has is gone: it
// lapsed (not renewed for a whole lease) or the store lost it (it was
// renewed in time; the store restarted or failed over without it).
func (k *keeper) lostReason(h *heldClaim) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if h == nil {
		return "the claim was lost"
	}
	if since := time.Since(h.renewed); since > k.lease {
		return "the claim expired: it was not renewed for " + since.Round(time.Millisecond).String() +
			" (the store was unreachable or the worker stalled), and the message may have run elsewhere;" +
			" check the store and the worker's CPU, or raise WARREN_DEDUPE_LEASE"
	}
	return "the claim was lost with the store (a restart or failover without it) although it was renewed in time;" +
		" the message may run again"
}

// isLost reports whether a renewal found the claim gone.
func (k *keeper) isLost(h *heldClaim) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return h != nil && h.lost
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

// renew extends every held claim once.
func (k *keeper) renew(ctx context.Context) {
	k.mu.Lock()
	claims := make([]*heldClaim, 0, len(k.held))
	for h := range k.held {
		if !h.lost {
			claims = append(claims, h)
		}
	}
	k.mu.Unlock()
	down := false
	for _, h := range claims {
		now := time.Now()
		err := k.store.Extend(ctx, h.key, h.owner, k.lease)
		if ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		switch {
		case err == nil:
			h.renewed = now
		case errors.Is(err, dedupe.ErrNotOwner):
			h.lost = true
		default:
			down = down || dedupe.Unavailable(err)
		}
		k.mu.Unlock()
		if err != nil && !errors.Is(err, dedupe.ErrNotOwner) {
			k.log.Debug("renewing a dedupe claim failed", zap.String("key", h.key), zap.Error(err))
		}
	}
	if len(claims) > 0 {
		k.health.storeResult(down)
	}
}

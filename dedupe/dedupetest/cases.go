package dedupetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

func testClaimFresh(h *harness) {
	h.claim(h.key("k"), "a", longLease, dedupe.Claimed)
}

func testClaimHeldByOther(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.claim(k, "b", longLease, dedupe.InProgress)
	h.check("Extend by holder", h.extend(k, "a", longLease), nil)
}

func testReclaimSameOwner(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.claim(k, "b", longLease, dedupe.InProgress)
}

func testReclaimResetsLease(h *harness) {
	k := h.key("k")
	h.claim(k, "a", 2*ShortLease, dedupe.Claimed)
	h.clock.Advance(ShortLease)
	h.claim(k, "a", 10*ShortLease, dedupe.Claimed)
	h.clock.Advance(ShortLease + ShortLease/2) // past the first lease
	h.claim(k, "b", longLease, dedupe.InProgress)
}

func testMarkDoneThenClaim(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("MarkDone", h.markDone(k, "a", longLease), nil)
	h.claim(k, "a", longLease, dedupe.Done)
	h.claim(k, "b", longLease, dedupe.Done)
	// Done already: a retried MarkDone (after a lost reply) succeeds.
	h.check("MarkDone again", h.markDone(k, "a", longLease), nil)
	h.check("MarkDone of a done key by another owner", h.markDone(k, "b", longLease), nil)
}

func testMarkDoneByNonOwner(h *harness) {
	k := h.key("k")
	h.check("MarkDone of absent key", h.markDone(k, "a", longLease), dedupe.ErrNotOwner)
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("MarkDone by non-owner", h.markDone(k, "b", longLease), dedupe.ErrNotOwner)
	h.claim(k, "b", longLease, dedupe.InProgress)
	h.check("MarkDone by owner", h.markDone(k, "a", longLease), nil)
	h.claim(k, "b", longLease, dedupe.Done)
}

func testReleaseThenClaim(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("Release", h.release(k, "a"), nil)
	h.claim(k, "b", longLease, dedupe.Claimed)
	h.check("Release by former owner", h.release(k, "a"), dedupe.ErrNotOwner)
}

func testReleaseByNonOwner(h *harness) {
	k := h.key("k")
	h.check("Release of absent key", h.release(k, "a"), dedupe.ErrNotOwner)
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("Release by non-owner", h.release(k, "b"), dedupe.ErrNotOwner)
	h.claim(k, "b", longLease, dedupe.InProgress)
}

func testReleaseAfterDone(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("MarkDone", h.markDone(k, "a", longLease), nil)
	h.check("Release after done", h.release(k, "a"), dedupe.ErrNotOwner)
	h.claim(k, "b", longLease, dedupe.Done)
}

func testLeaseExpiry(h *harness) {
	k := h.key("k")
	h.claim(k, "a", ShortLease, dedupe.Claimed)
	h.claim(k, "b", longLease, dedupe.InProgress)
	h.clock.Advance(ShortLease)
	h.eventuallyClaims(k, "b")
	h.check("MarkDone by expired owner", h.markDone(k, "a", longLease), dedupe.ErrNotOwner)
	h.check("Extend by expired owner", h.extend(k, "a", longLease), dedupe.ErrNotOwner)
	h.claim(k, "a", longLease, dedupe.InProgress)
}

func testExtendKeepsAlive(h *harness) {
	k := h.key("k")
	h.claim(k, "a", 2*ShortLease, dedupe.Claimed)
	h.clock.Advance(ShortLease)
	h.check("Extend", h.extend(k, "a", 10*ShortLease), nil)
	h.clock.Advance(ShortLease + ShortLease/2) // past the first lease
	h.claim(k, "b", longLease, dedupe.InProgress)
	h.check("MarkDone after Extend", h.markDone(k, "a", longLease), nil)
}

func testExtendByNonOwner(h *harness) {
	k := h.key("k")
	h.check("Extend of absent key", h.extend(k, "a", longLease), dedupe.ErrNotOwner)
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("Extend by non-owner", h.extend(k, "b", longLease), dedupe.ErrNotOwner)
	h.check("MarkDone", h.markDone(k, "a", longLease), nil)
	h.check("Extend after done", h.extend(k, "a", longLease), dedupe.ErrNotOwner)
	h.claim(k, "b", longLease, dedupe.Done)
}

func testDoneTTLExpiry(h *harness) {
	k := h.key("k")
	h.claim(k, "a", longLease, dedupe.Claimed)
	h.check("MarkDone", h.markDone(k, "a", ShortLease), nil)
	h.claim(k, "b", longLease, dedupe.Done)
	h.clock.Advance(ShortLease)
	h.eventuallyClaims(k, "b")
}

func testInvalidArguments(h *harness) {
	ctx, k := h.t.Context(), h.key("k")
	for _, d := range []time.Duration{0, -time.Second} {
		_, err := h.store.Claim(ctx, k, "a", d)
		h.invalid(fmt.Sprintf("Claim with lease %s", d), err)
	}
	_, err := h.store.Claim(ctx, "", "a", longLease)
	h.invalid("Claim of empty key", err)
	_, err = h.store.Claim(ctx, k, "", longLease)
	h.invalid("Claim by empty owner", err)
	h.claim(k, "a", longLease, dedupe.Claimed) // nothing was written before
	h.invalid("Extend with lease 0", h.extend(k, "a", 0))
	h.invalid("MarkDone with ttl 0", h.markDone(k, "a", 0))
	h.invalid("MarkDone with negative ttl", h.markDone(k, "a", -time.Second))
	h.invalid("Release by empty owner", h.release(k, ""))
	h.claim(k, "b", longLease, dedupe.InProgress) // still held by a
}

func testSubMillisecondLease(h *harness) {
	h.claim(h.key("k"), "a", time.Microsecond, dedupe.Claimed)
}

func testCanceledContext(h *harness) {
	ctx, cancel := context.WithCancel(h.t.Context())
	cancel()
	k := h.key("k")
	if _, err := h.store.Claim(ctx, k, "a", longLease); !errors.Is(err, context.Canceled) {
		h.t.Fatalf("Claim with canceled context: error %v, want context.Canceled", err)
	}
	if err := h.store.Release(ctx, k, "a"); !errors.Is(err, context.Canceled) {
		h.t.Fatalf("Release with canceled context: error %v, want context.Canceled", err)
	}
	h.claim(k, "b", longLease, dedupe.Claimed)
}

func testConcurrentClaims(h *harness) {
	const n = 50
	k := h.key("k")
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]dedupe.Status, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = h.store.Claim(h.t.Context(), k, fmt.Sprintf("owner-%d", i), longLease)
		})
	}
	close(start)
	wg.Wait()
	claimed := 0
	for i := range n {
		h.check(fmt.Sprintf("Claim by owner-%d", i), errs[i], nil)
		switch results[i] {
		case dedupe.Claimed:
			claimed++
		case dedupe.InProgress:
		default:
			h.t.Fatalf("Claim by owner-%d = %s, want claimed or in_progress", i, results[i])
		}
	}
	if claimed != 1 {
		h.t.Fatalf("%d of %d concurrent claims won, want exactly 1", claimed, n)
	}
}

func testManyKeys(h *harness) {
	const n = 100
	for i := range n {
		h.claim(h.key(fmt.Sprint(i)), "a", longLease, dedupe.Claimed)
	}
	for i := range n {
		k := h.key(fmt.Sprint(i))
		if i%2 == 0 {
			h.check("MarkDone", h.markDone(k, "a", longLease), nil)
		} else {
			h.check("Release", h.release(k, "a"), nil)
		}
	}
	for i := range n {
		want := dedupe.Claimed
		if i%2 == 0 {
			want = dedupe.Done
		}
		h.claim(h.key(fmt.Sprint(i)), "b", longLease, want)
	}
}

func testPing(h *harness) {
	h.check("Ping", h.store.Ping(h.t.Context()), nil)
}

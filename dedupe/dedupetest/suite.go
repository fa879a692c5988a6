// Package dedupetest is the conformance suite of dedupe.Store: every store
// of this project must pass Run.
package dedupetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// Durations used by the suite. ShortLease is what a test waits for to see
// a real expiry, so it is kept short.
const (
	ShortLease = 200 * time.Millisecond
	longLease  = time.Minute
	waitFor    = 5 * time.Second
	pollEvery  = 10 * time.Millisecond
)

// Run checks that the stores made by newStore behave as dedupe.Store
// says. Each case runs in parallel with the others and calls newStore once
// with its own t; the store may be shared, since each case uses keys under
// a prefix of its own. The returned Clock must move the store's time: a
// ManualClock for a store with an injected clock, SleepClock for one that
// uses real time.
func Run(t *testing.T, newStore func(t *testing.T) (dedupe.Store, Clock)) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(newHarness(t, newStore))
		})
	}
}

var cases = []struct {
	name string
	run  func(h *harness)
}{
	{"ClaimFresh", testClaimFresh},
	{"ClaimHeldByOther", testClaimHeldByOther},
	{"ReclaimSameOwner", testReclaimSameOwner},
	{"ReclaimResetsLease", testReclaimResetsLease},
	{"MarkDoneThenClaim", testMarkDoneThenClaim},
	{"MarkDoneByNonOwner", testMarkDoneByNonOwner},
	{"ReleaseThenClaim", testReleaseThenClaim},
	{"ReleaseByNonOwner", testReleaseByNonOwner},
	{"ReleaseAfterDone", testReleaseAfterDone},
	{"LeaseExpiry", testLeaseExpiry},
	{"ExtendKeepsAlive", testExtendKeepsAlive},
	{"ExtendByNonOwner", testExtendByNonOwner},
	{"DoneTTLExpiry", testDoneTTLExpiry},
	{"InvalidArguments", testInvalidArguments},
	{"SubMillisecondLease", testSubMillisecondLease},
	{"CanceledContext", testCanceledContext},
	{"ConcurrentClaims", testConcurrentClaims},
	{"ManyKeys", testManyKeys},
	{"Ping", testPing},
}

// harness is one case: its store, clock and key prefix.
type harness struct {
	t      *testing.T
	store  dedupe.Store
	clock  Clock
	prefix string
}

func newHarness(t *testing.T, newStore func(t *testing.T) (dedupe.Store, Clock)) *harness {
	s, c := newStore(t)
	return &harness{
		t:      t,
		store:  s,
		clock:  c,
		prefix: fmt.Sprintf("%s%016x", KeyPrefix(t), rand.Uint64()),
	}
}

// key returns the key called name in this case's namespace.
func (h *harness) key(name string) string {
	return dedupe.Key(h.prefix, "suite", name)
}

// claim claims key for owner and fails unless the status is want.
func (h *harness) claim(key, owner string, lease time.Duration, want dedupe.Status) {
	h.t.Helper()
	got, err := h.store.Claim(h.t.Context(), key, owner, lease)
	if err != nil {
		h.t.Fatalf("Claim(%q, %q, %s): %v", key, owner, lease, err)
	}
	if got != want {
		h.t.Fatalf("Claim(%q, %q, %s) = %s, want %s", key, owner, lease, got, want)
	}
}

// check fails unless err matches want: nil means no error.
func (h *harness) check(what string, err, want error) {
	h.t.Helper()
	if want == nil && err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
	if want != nil && !errors.Is(err, want) {
		h.t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

// invalid fails unless err is an argument error: not nil and not ErrNotOwner.
func (h *harness) invalid(what string, err error) {
	h.t.Helper()
	if err == nil || errors.Is(err, dedupe.ErrNotOwner) {
		h.t.Fatalf("%s: error %v, want an invalid argument error", what, err)
	}
}

// eventuallyClaims polls until owner claims key, failing after waitFor.
func (h *harness) eventuallyClaims(key, owner string) {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got, err := h.store.Claim(h.t.Context(), key, owner, longLease)
		if err != nil {
			h.t.Fatalf("Claim(%q, %q): %v", key, owner, err)
		}
		if got == dedupe.Claimed {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("Claim(%q, %q) = %s after %s, want claimed", key, owner, got, waitFor)
		}
		time.Sleep(pollEvery)
	}
}

func (h *harness) extend(key, owner string, lease time.Duration) error {
	return h.store.Extend(h.t.Context(), key, owner, lease)
}

func (h *harness) markDone(key, owner string, ttl time.Duration) error {
	return h.store.MarkDone(h.t.Context(), key, owner, ttl)
}

func (h *harness) release(key, owner string) error {
	return h.store.Release(h.t.Context(), key, owner)
}

package dedupetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// RunBatch checks that the batch calls of the stores made by newStore
// answer each request as the one-key call would, whatever mix of states,
// owners and hash slots a batch holds. Each case runs in parallel; the
// store may be shared. Every key a case writes starts with KeyPrefix(t)
// of the t given to newStore, so that a Redis test can delete them.
func RunBatch(t *testing.T, newStore func(t *testing.T) dedupe.BatchStore) {
	t.Helper()
	for _, c := range batchCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(&batchHarness{t: t, store: newStore(t), prefix: fmt.Sprintf("%s%016x", KeyPrefix(t), rand.Uint64())})
		})
	}
}

// KeyPrefix is how the keys of the batch case t start.
func KeyPrefix(t *testing.T) string { return "dedupetest:" + t.Name() + ":" }

var batchCases = []struct {
	name string
	run  func(h *batchHarness)
}{
	{"ClaimAllMixed", testClaimAllMixed},
	{"MarkDoneAllMixed", testMarkDoneAllMixed},
	{"ExtendAllMixed", testExtendAllMixed},
	{"ManyKeysOneSlot", testManyKeysOneSlot},
	{"ManySlots", testManySlots},
}

type batchHarness struct {
	t      *testing.T
	store  dedupe.BatchStore
	prefix string
}

func (h *batchHarness) key(name string) string { return dedupe.Key(h.prefix, "batch", name) }

func (h *batchHarness) claim(key, owner string, want dedupe.Status) {
	h.t.Helper()
	if got, err := h.store.Claim(h.t.Context(), key, owner, longLease); err != nil || got != want {
		h.t.Fatalf("Claim(%q, %q) = %s, %v; want %s", key, owner, got, err, want)
	}
}

// testClaimAllMixed: one ClaimAll over fresh keys, keys held by the same
// owner, by another owner, done keys and invalid requests.
func testClaimAllMixed(h *batchHarness) {
	ctx := h.t.Context()
	own, other, done := h.key("own"), h.key("other"), h.key("done")
	h.claim(own, "a", dedupe.Claimed)
	h.claim(other, "b", dedupe.Claimed)
	h.claim(done, "b", dedupe.Claimed)
	if err := h.store.MarkDone(ctx, done, "b", longLease); err != nil {
		h.t.Fatal(err)
	}
	reqs := []dedupe.Ref{
		{Key: h.key("fresh-1"), Owner: "a"}, {Key: own, Owner: "a"}, {Key: other, Owner: "a"},
		{Key: done, Owner: "a"}, {Key: "", Owner: "a"}, {Key: h.key("fresh-2"), Owner: ""},
		{Key: h.key("fresh-3"), Owner: "a"},
	}
	want := []dedupe.Status{dedupe.Claimed, dedupe.Claimed, dedupe.InProgress, dedupe.Done, 0, 0, dedupe.Claimed}
	res := h.store.ClaimAll(ctx, reqs, longLease)
	if len(res) != len(reqs) {
		h.t.Fatalf("ClaimAll gave %d results for %d requests", len(res), len(reqs))
	}
	for i, r := range res {
		switch {
		case want[i] == 0 && (r.Err == nil || errors.Is(r.Err, dedupe.ErrNotOwner)):
			h.t.Errorf("request %d (%q, %q): %s, %v; want an invalid argument error", i, reqs[i].Key, reqs[i].Owner, r.Status, r.Err)
		case want[i] != 0 && (r.Err != nil || r.Status != want[i]):
			h.t.Errorf("request %d (%q): %s, %v; want %s", i, reqs[i].Key, r.Status, r.Err, want[i])
		}
	}
	h.claim(h.key("fresh-1"), "b", dedupe.InProgress)
	h.claim(other, "b", dedupe.Claimed) // still b's
	for i, r := range h.store.ClaimAll(ctx, nil, longLease) {
		h.t.Errorf("ClaimAll of nothing answered %d: %v", i, r)
	}
}

// testMarkDoneAllMixed: one MarkDoneAll over owned, foreign, absent,
// done and invalid requests; sent again, as after a lost reply, it still
// succeeds for the marks it stored.
func testMarkDoneAllMixed(h *batchHarness) {
	ctx := h.t.Context()
	mine, theirs, done := h.key("mine"), h.key("theirs"), h.key("done")
	h.claim(mine, "a", dedupe.Claimed)
	h.claim(theirs, "b", dedupe.Claimed)
	h.claim(done, "b", dedupe.Claimed)
	if err := h.store.MarkDone(ctx, done, "b", longLease); err != nil {
		h.t.Fatal(err)
	}
	reqs := []dedupe.Ref{{Key: mine, Owner: "a"}, {Key: theirs, Owner: "a"}, {Key: h.key("absent"), Owner: "a"},
		{Key: done, Owner: "a"}, {Key: "", Owner: "a"}}
	want := []error{nil, dedupe.ErrNotOwner, dedupe.ErrNotOwner, nil, errInvalid}
	for round := range 2 {
		errs := h.store.MarkDoneAll(ctx, reqs, longLease)
		if len(errs) != len(reqs) {
			h.t.Fatalf("MarkDoneAll gave %d results for %d requests", len(errs), len(reqs))
		}
		for i, err := range errs {
			if !matches(err, want[i]) {
				h.t.Errorf("round %d, request %d (%q, %q): %v, want %v", round, i, reqs[i].Key, reqs[i].Owner, err, want[i])
			}
		}
	}
	h.claim(mine, "c", dedupe.Done)
	h.claim(theirs, "c", dedupe.InProgress)
	h.claim(h.key("absent"), "c", dedupe.Claimed)
}

// testManyKeysOneSlot: more keys than one script call takes, all in one
// hash slot (SameSlot), through both batch calls.
func testManyKeysOneSlot(h *batchHarness) {
	base := h.key("base")
	var reqs []dedupe.Ref
	for i := range 300 {
		reqs = append(reqs, dedupe.Ref{Key: dedupe.SameSlot(base, fmt.Sprint(h.prefix, ":k", i)), Owner: "a"})
	}
	h.claimAndMarkAll(reqs)
}

// testManySlots: keys of many slots, with some sharing one, through both
// batch calls.
func testManySlots(h *batchHarness) {
	var reqs []dedupe.Ref
	for i := range 400 {
		k := h.key(fmt.Sprint("k", i))
		if i%3 == 0 {
			k = dedupe.SameSlot(h.key(fmt.Sprint("k", i%30)), fmt.Sprint(h.prefix, ":s", i))
		}
		reqs = append(reqs, dedupe.Ref{Key: k, Owner: fmt.Sprint("owner-", i%5)})
	}
	h.claimAndMarkAll(reqs)
}

// claimAndMarkAll claims reqs (fresh) twice, the second time as the same
// owners and as others, marks them done, and checks each key's state.
func (h *batchHarness) claimAndMarkAll(reqs []dedupe.Ref) {
	h.t.Helper()
	ctx := h.t.Context()
	for round := range 2 {
		for i, r := range h.store.ClaimAll(ctx, reqs, longLease) {
			if r.Err != nil || r.Status != dedupe.Claimed {
				h.t.Fatalf("ClaimAll round %d, request %d (%q): %s, %v; want claimed", round, i, reqs[i].Key, r.Status, r.Err)
			}
		}
	}
	others := make([]dedupe.Ref, len(reqs))
	for i, r := range reqs {
		others[i] = dedupe.Ref{Key: r.Key, Owner: "intruder"}
	}
	for i, r := range h.store.ClaimAll(ctx, others, longLease) {
		if r.Err != nil || r.Status != dedupe.InProgress {
			h.t.Fatalf("ClaimAll by another owner, request %d: %s, %v; want in progress", i, r.Status, r.Err)
		}
	}
	for i, err := range h.store.MarkDoneAll(ctx, others, longLease) {
		if !errors.Is(err, dedupe.ErrNotOwner) {
			h.t.Fatalf("MarkDoneAll by another owner, request %d: %v; want ErrNotOwner", i, err)
		}
	}
	for i, err := range h.store.ExtendAll(ctx, others, longLease) {
		if !errors.Is(err, dedupe.ErrNotOwner) {
			h.t.Fatalf("ExtendAll by another owner, request %d: %v; want ErrNotOwner", i, err)
		}
	}
	for i, err := range h.store.ExtendAll(ctx, reqs, longLease) {
		if err != nil {
			h.t.Fatalf("ExtendAll, request %d (%q): %v", i, reqs[i].Key, err)
		}
	}
	for i, err := range h.store.MarkDoneAll(ctx, reqs, time.Minute) {
		if err != nil {
			h.t.Fatalf("MarkDoneAll, request %d (%q): %v", i, reqs[i].Key, err)
		}
	}
	for i, r := range h.store.ClaimAll(ctx, others, longLease) {
		if r.Err != nil || r.Status != dedupe.Done {
			h.t.Fatalf("ClaimAll after MarkDoneAll, request %d: %s, %v; want done", i, r.Status, r.Err)
		}
	}
}

// errInvalid stands for an invalid argument error in a want list.
var errInvalid = errors.New("an invalid argument error")

func matches(err, want error) bool {
	switch want {
	case nil:
		return err == nil
	case errInvalid:
		return err != nil && !errors.Is(err, dedupe.ErrNotOwner)
	}
	return errors.Is(err, want)
}

// testExtendAllMixed: one ExtendAll over owned, foreign, absent, done and
// invalid requests renews only the owned claims, and changes nothing else.
func testExtendAllMixed(h *batchHarness) {
	ctx := h.t.Context()
	mine, theirs, done := h.key("mine"), h.key("theirs"), h.key("done")
	h.claim(mine, "a", dedupe.Claimed)
	h.claim(theirs, "b", dedupe.Claimed)
	h.claim(done, "a", dedupe.Claimed)
	if err := h.store.MarkDone(ctx, done, "a", longLease); err != nil {
		h.t.Fatal(err)
	}
	reqs := []dedupe.Ref{{Key: mine, Owner: "a"}, {Key: theirs, Owner: "a"}, {Key: h.key("absent"), Owner: "a"},
		{Key: done, Owner: "a"}, {Key: "", Owner: "a"}}
	want := []error{nil, dedupe.ErrNotOwner, dedupe.ErrNotOwner, dedupe.ErrNotOwner, errInvalid}
	errs := h.store.ExtendAll(ctx, reqs, longLease)
	if len(errs) != len(reqs) {
		h.t.Fatalf("ExtendAll gave %d results for %d requests", len(errs), len(reqs))
	}
	for i, err := range errs {
		if !matches(err, want[i]) {
			h.t.Errorf("request %d (%q, %q): %v, want %v", i, reqs[i].Key, reqs[i].Owner, err, want[i])
		}
	}
	h.claim(mine, "c", dedupe.InProgress)
	h.claim(theirs, "c", dedupe.InProgress)
	h.claim(done, "c", dedupe.Done)
	h.claim(h.key("absent"), "c", dedupe.Claimed)
	if err := h.store.Extend(ctx, mine, "a", longLease); err != nil {
		h.t.Fatalf("the renewed claim is no longer a's: %v", err)
	}
}

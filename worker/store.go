package worker

import (
	"context"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// batchStore is store's own batch calls, or, for a store that has none,
// one call after another: the worker claims and marks done through the
// batch calls only, and adapts a store once, where it is opened.
func batchStore(store dedupe.Store) dedupe.BatchStore {
	if bs, ok := store.(dedupe.BatchStore); ok {
		return bs
	}
	return oneByOne{store}
}

// oneByOne gives a Store without batch calls the batch calls.
type oneByOne struct{ dedupe.Store }

func (o oneByOne) ClaimAll(ctx context.Context, reqs []dedupe.Ref, lease time.Duration) []dedupe.ClaimResult {
	res := make([]dedupe.ClaimResult, len(reqs))
	for i, r := range reqs {
		res[i].Status, res[i].Err = o.Claim(ctx, r.Key, r.Owner, lease)
	}
	return res
}

func (o oneByOne) MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = o.MarkDone(ctx, r.Key, r.Owner, ttl)
	}
	return errs
}

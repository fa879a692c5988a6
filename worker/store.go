package worker

import (
	"context"
	"sync"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// batchStore is store's own batch calls, or, for a store that has none,
// one call per request: the worker claims, renews and marks done through
// the batch calls only, and adapts a store once, where it is opened.
func batchStore(store dedupe.Store) dedupe.BatchStore {
	if bs, ok := store.(dedupe.BatchStore); ok {
		return bs
	}
	return oneByOne{store}
}

// txStoreOf is store's transactional done mark, nil when it has none.
// Ask the store as it was given: the adapter of batchStore hides it.
func txStoreOf(store dedupe.Store) dedupe.TxStore {
	tx, _ := store.(dedupe.TxStore)
	return tx
}

// oneByOne gives a Store without batch calls the batch calls.
type oneByOne struct{ dedupe.Store }

// ClaimAll claims every request at once, each in a goroutine of its own,
// so that a batch costs about one round trip as it would one handler
// each.
func (o oneByOne) ClaimAll(ctx context.Context, reqs []dedupe.Ref, lease time.Duration) []dedupe.ClaimResult {
	res := make([]dedupe.ClaimResult, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { res[i].Status, res[i].Err = o.Claim(ctx, r.Key, r.Owner, lease) })
	}
	wg.Wait()
	return res
}

// ExtendAll renews every request at once, each in a goroutine of its own.
func (o oneByOne) ExtendAll(ctx context.Context, reqs []dedupe.Ref, lease time.Duration) []error {
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { errs[i] = o.Extend(ctx, r.Key, r.Owner, lease) })
	}
	wg.Wait()
	return errs
}

func (o oneByOne) MarkDoneAll(ctx context.Context, reqs []dedupe.Ref, ttl time.Duration) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = o.MarkDone(ctx, r.Key, r.Owner, ttl)
	}
	return errs
}

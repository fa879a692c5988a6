package worker

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
)

// ErrNoAtomicStore is returned by CommitWithDone when the message's route
// has no Redis dedupe store to commit with.
var ErrNoAtomicStore = errors.New("worker: CommitWithDone needs dedupe on with a Redis store")

type txKey struct{}

// txWrites collects a handler's writes for the done mark's transaction.
type txWrites struct {
	key string
	mu  sync.Mutex
	fns []func(redis.Pipeliner) error
}

func (t *txWrites) all(p redis.Pipeliner) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, fn := range t.fns {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func (t *txWrites) empty() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.fns) == 0
}

// CommitWithDone queues Redis writes that are committed in one MULTI/EXEC
// with the message's done mark, after the handler returns nil, and only
// while this worker still holds the message's claim. So they happen
// exactly once per message, even when a worker crashes after its handler
// and before the mark: the message then runs again and commits once.
// If the commit cannot happen (the claim was lost, Redis is down), the
// message is requeued and runs again. An error returned by writes is the
// handler's failure: nothing is written, and the message is retried as
// after any failure. A write that Redis refuses when it runs it (a key of
// the wrong type) cannot be undone: MULTI/EXEC does not roll back, so the
// mark and the other writes stay, the message is acked as done, and the
// lost write is logged as an error. On Redis Cluster, name every key
// with RedisKey (a name with braces in it falls into another hash slot,
// and the commit fails). Without a Redis dedupe store it returns ErrNoAtomicStore
// and queues nothing.
func CommitWithDone(ctx context.Context, writes func(redis.Pipeliner) error) error {
	t, ok := ctx.Value(txKey{}).(*txWrites)
	if !ok {
		return ErrNoAtomicStore
	}
	t.mu.Lock()
	t.fns = append(t.fns, writes)
	t.mu.Unlock()
	return nil
}

// RedisKey returns name placed in the Redis Cluster hash slot of the
// message's dedupe key, for writes given to CommitWithDone. Outside such
// a handler it returns name.
func RedisKey(ctx context.Context, name string) string {
	if t, ok := ctx.Value(txKey{}).(*txWrites); ok {
		return dedupe.SameSlot(t.key, name)
	}
	return name
}

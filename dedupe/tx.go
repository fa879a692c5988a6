package dedupe

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TxStore is a Store that can commit a handler's own Redis writes in the
// same atomic step as the done mark, so those writes happen exactly once
// per message even when a worker crashes between its effect and the mark.
type TxStore interface {
	Store
	// MarkDoneWith queues writes and the done mark in one MULTI/EXEC that
	// commits only while owner still holds the claim. When the claim is
	// no longer owner's, nothing is written and ErrNotOwner is returned.
	// When the key is done already, nothing is written and nil is
	// returned: the message's writes were committed once, by this owner
	// (its reply was lost) or by another.
	MarkDoneWith(ctx context.Context, key, owner string, ttl time.Duration, writes func(redis.Pipeliner) error) error
}

var _ TxStore = (*RedisStore)(nil)

var errAlreadyDone = errors.New("dedupe: already done")

// MarkDoneWith implements TxStore. On Redis Cluster every key that writes
// touches must be in key's hash slot: build them with SameSlot.
func (s *RedisStore) MarkDoneWith(ctx context.Context, key, owner string, ttl time.Duration, writes func(redis.Pipeliner) error) error {
	if err := checkArgsDuration(opMarkDone, key, owner, "ttl", ttl); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	err := s.client.Watch(ctx, func(tx *redis.Tx) error {
		v, err := tx.Get(ctx, key).Result()
		if err == nil && v == valueDone {
			// Done already: after a lost reply this is our own commit;
			// otherwise another worker applied the message's writes.
			// Either way they happened once.
			return errAlreadyDone
		}
		if errors.Is(err, redis.Nil) || (err == nil && v != valueProcessingPrefix+owner) {
			return ErrNotOwner
		}
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			if err := writes(pipe); err != nil {
				return err
			}
			pipe.Set(ctx, key, valueDone, ttl)
			return nil
		})
		return err
	}, key)
	switch {
	case errors.Is(err, errAlreadyDone):
		return nil
	case err == nil, errors.Is(err, ErrNotOwner):
		return err
	case errors.Is(err, redis.TxFailedErr):
		return ErrNotOwner // the claim changed between the check and the commit
	}
	s.noteError(ctx, err)
	return opError(opMarkDone, key, err)
}

// SameSlot returns a key named name that Redis Cluster stores in the same
// hash slot as key (a key built by Key), for writes committed with
// MarkDoneWith.
func SameSlot(key, name string) string {
	open, end := strings.IndexByte(key, '{'), strings.LastIndexByte(key, '}')
	if open < 0 || end <= open {
		return name
	}
	return name + ":" + key[open:end+1]
}

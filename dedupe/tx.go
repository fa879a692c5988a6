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

// WritesError is MarkDoneWith's error when its writes function failed:
// nothing was written. It is the handler's failure, not the store's.
type WritesError struct{ Err error }

func (e *WritesError) Error() string { return "queueing the handler's writes: " + e.Err.Error() }
func (e *WritesError) Unwrap() error { return e.Err }

// PartialCommitError is MarkDoneWith's error when the transaction
// committed, done mark included, but some of the writes failed as Redis
// ran them (a wrong type, say): MULTI/EXEC does not roll back. The
// message is done; the failed writes are lost.
type PartialCommitError struct{ Err error }

func (e *PartialCommitError) Error() string {
	return "the done mark committed, but some of the handler's writes failed in the transaction and are lost: " + e.Err.Error()
}
func (e *PartialCommitError) Unwrap() error { return e.Err }

// txAttempts bounds how often MarkDoneWith runs its transaction again when
// the key changed under its WATCH. The worker's own lease renewal (a
// PEXPIRE) changes it too, so one lost race is no lost claim: the next
// attempt reads the key again and decides.
const txAttempts = 5

// MarkDoneWith implements TxStore. On Redis Cluster every key that writes
// touches must be in key's hash slot: build them with SameSlot (a name
// with braces in it falls into another slot, and the commit then fails
// with CROSSSLOT).
func (s *RedisStore) MarkDoneWith(ctx context.Context, key, owner string, ttl time.Duration, writes func(redis.Pipeliner) error) error {
	if err := checkArgsDuration(opMarkDone, key, owner, "ttl", ttl); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	var err error
	for range txAttempts {
		if err = s.markDoneWith(ctx, key, owner, ttl, writes); !errors.Is(err, redis.TxFailedErr) {
			break
		}
	}
	var (
		we *WritesError
		pe *PartialCommitError
	)
	switch {
	case errors.Is(err, errAlreadyDone):
		return nil
	case err == nil, errors.Is(err, ErrNotOwner):
		return err
	case errors.Is(err, redis.TxFailedErr):
		return ErrNotOwner // the claim kept changing between the check and the commit
	case errors.As(err, &we), errors.As(err, &pe):
		return opError(opMarkDone, key, err)
	}
	s.noteError(ctx, err)
	return opError(opMarkDone, key, err)
}

// markDoneWith is one try of MarkDoneWith's transaction.
func (s *RedisStore) markDoneWith(ctx context.Context, key, owner string, ttl time.Duration, writes func(redis.Pipeliner) error) error {
	return s.client.Watch(ctx, func(tx *redis.Tx) error {
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
		var mark *redis.StatusCmd
		cmds, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			if err := writes(pipe); err != nil {
				return &WritesError{Err: err}
			}
			mark = pipe.Set(ctx, key, valueDone, ttl)
			return nil
		})
		switch {
		case err == nil:
			return nil
		case redis.IsExecAbortError(err):
			// Redis refused a command as it queued it, and ran none.
			return queueRefusal(cmds, err)
		case mark != nil && mark.Err() == nil && mark.Val() == "OK":
			// EXEC ran: the mark is stored. A read of a missing key
			// (redis.Nil) is no failure; anything else is a lost write.
			if failed := firstFailure(cmds); failed != nil {
				return &PartialCommitError{Err: failed}
			}
			return nil
		}
		return err
	}, key)
}

// queueRefusal is the error of a transaction that Redis discarded
// (EXECABORT) because it refused a command as it queued it: the store's
// when the refusal says the server cannot serve now (out of memory,
// read-only, a slot moving), so that the message waits for it; the
// handler's otherwise (a command of its writes that Redis rejects: a
// wrong number of arguments, a key its ACL user may not touch), since
// waiting would not change it.
func queueRefusal(cmds []redis.Cmder, abort error) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !redis.IsExecAbortError(err) {
			if unavailable(err, notServing) {
				return err
			}
			return &WritesError{Err: err}
		}
	}
	return abort
}

// firstFailure is the first error among cmds but redis.Nil.
func firstFailure(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
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

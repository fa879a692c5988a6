package dedupe

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is the outcome of Store.Claim.
type Status int

const (
	// Claimed means the caller now holds the claim: run the handler.
	Claimed Status = iota + 1
	// Done means the message was already processed: it is a duplicate,
	// ack it without running the handler.
	Done
	// InProgress means another owner holds a live claim on the message.
	InProgress
)

// String returns "claimed", "done" or "in_progress".
func (s Status) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Done:
		return "done"
	case InProgress:
		return "in_progress"
	default:
		return fmt.Sprintf("Status(%d)", int(s))
	}
}

// ErrNotOwner is returned by Extend, MarkDone and Release when the key is
// not claimed by the given owner: it is absent, done, expired or held by
// another owner. Nothing is changed in that case.
var ErrNotOwner = errors.New("dedupe: claim is not held by this owner")

// ErrForeignValue is wrapped by Claim's error when the key holds a value
// that no Store wrote: the key space is shared with something else.
var ErrForeignValue = errors.New("key holds a value not written by this package")

// ErrMarkedOver is wrapped by a Held done mark's error when the key held
// another owner's claim: the caller had lost its claim before the mark (it
// expired, or went with the store) and the message may have run twice.
// The key is marked done all the same, which is true: the caller's run
// succeeded. It wraps ErrNotOwner.
var ErrMarkedOver = fmt.Errorf("%w: another owner's claim was there and is marked done", ErrNotOwner)

// Store is the state machine. Every method is one atomic transition and
// one round trip.
//
// The states of a key are: absent, processing (with an owner token and a
// lease) and done (with a TTL). Claim moves absent to processing, MarkDone
// moves processing to done, Release moves processing back to absent, and
// an expired lease or TTL makes the key absent again.
//
// Keys, owners and durations are checked before any I/O: an empty key or
// owner, or a lease or ttl that is not positive, is an error.
type Store interface {
	// Claim takes the key for owner for lease if it is absent (or its
	// lease expired). If the key is done → Done. If another owner holds
	// it → InProgress. If the same owner already holds it → Claimed (and
	// the lease is reset).
	Claim(ctx context.Context, key, owner string, lease time.Duration) (Status, error)
	// Extend resets the lease if owner holds the claim, else ErrNotOwner.
	Extend(ctx context.Context, key, owner string, lease time.Duration) error
	// MarkDone turns owner's claim into done with ttl. A key that is done
	// already is left as it is and nil returned (the message is recorded;
	// a retried call after a lost reply lands here). Else ErrNotOwner
	// (nothing changes).
	MarkDone(ctx context.Context, key, owner string, ttl time.Duration) error
	// Release deletes owner's claim so a retry can run; ErrNotOwner if not
	// held by owner (nothing changes; a done mark is never deleted).
	Release(ctx context.Context, key, owner string) error
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
}

// Names of the operations, used in error messages.
const (
	opClaim    = "claim"
	opExtend   = "extend"
	opMarkDone = "mark done"
	opRelease  = "release"
)

// opError wraps err with the operation and key it happened in.
func opError(op, key string, err error) error {
	return fmt.Errorf("dedupe: %s %q: %w", op, key, err)
}

// checkArgs reports an empty key or owner.
func checkArgs(op, key, owner string) error {
	if key == "" {
		return fmt.Errorf("dedupe: %s: empty key", op)
	}
	if owner == "" {
		return opError(op, key, errors.New("empty owner"))
	}
	return nil
}

// checkArgsDuration is checkArgs plus a positive duration named name.
func checkArgsDuration(op, key, owner, name string, d time.Duration) error {
	if err := checkArgs(op, key, owner); err != nil {
		return err
	}
	if d <= 0 {
		return opError(op, key, fmt.Errorf("%s must be positive, got %s", name, d))
	}
	return nil
}

// millis converts a positive d to whole milliseconds, rounding up so that
// the result is at least 1.
func millis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// Ref names a key and an owner, for the batch calls.
type Ref struct {
	Key, Owner string
	// Held, in a MarkDoneAll request, is the caller's word that Owner
	// holds the claim: it took or renewed it well within the lease (a
	// worker's renewals tell it so). A store may then skip comparing the
	// owner, which costs Redis one SET XX GET instead of a script (about
	// a third of the work), and compare the value it replaced afterwards.
	// A key that is gone still answers ErrNotOwner and is not written. A
	// key that another owner claimed meanwhile (the claim lost in a
	// failover, or expired while the mark waited) becomes done, which says
	// the truth: the message was handled, and that owner's own mark then
	// finds it done; the call answers ErrMarkedOver, since the message may
	// have run twice. A value no Store wrote is overwritten and answers
	// ErrForeignValue; a key of another type is left as it is and answers
	// ErrForeignValue.
	Held bool
}

// ClaimResult answers one claim of ClaimAll.
type ClaimResult struct {
	Status Status
	Err    error
}

// BatchStore is a Store that claims, and marks done, many keys in one
// round trip.
type BatchStore interface {
	Store
	// ClaimAll is Claim for every request; res[i] answers reqs[i].
	ClaimAll(ctx context.Context, reqs []Ref, lease time.Duration) (res []ClaimResult)
	// MarkDoneAll is MarkDone for every request; errs[i] answers reqs[i].
	MarkDoneAll(ctx context.Context, reqs []Ref, ttl time.Duration) (errs []error)
	// ExtendAll is Extend for every request; errs[i] answers reqs[i].
	ExtendAll(ctx context.Context, reqs []Ref, lease time.Duration) (errs []error)
}

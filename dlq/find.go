package dlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/warrenmq/warren/broker"
)

// ErrNoLetter is returned by Find when the letter is no longer there.
var ErrNoLetter = errors.New("dead letter not found (replayed, purged or changed since)")

// Find reads dlq until it meets the letter with id and returns it; the
// letter stays in the queue. The body is bounded by what the broker holds.
func Find(ctx context.Context, conn *broker.Conn, queue string, id ID) (*Letter, error) {
	dlq := Name(queue)
	b, err := conn.Browse(ctx, dlq, 0)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dlq, err)
	}
	defer b.Close()
	for {
		d, ok, err := b.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", dlq, err)
		}
		if !ok {
			return nil, fmt.Errorf("%s in %s: %w", id, dlq, ErrNoLetter)
		}
		if l := Read(d, dlq); l.ID == id {
			return l, nil
		}
	}
}

// Peek returns the first limit letters of a dead-letter queue; they stay
// in the queue.
func Peek(ctx context.Context, conn *broker.Conn, queue string, limit int) ([]*Letter, error) {
	dlq := Name(queue)
	b, err := conn.Browse(ctx, dlq, min(max(limit, 1), 500))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dlq, err)
	}
	defer b.Close()
	var out []*Letter
	for len(out) < limit {
		d, ok, err := b.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", dlq, err)
		}
		if !ok {
			break
		}
		out = append(out, Read(d, dlq))
	}
	return out, nil
}
